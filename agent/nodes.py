"""One candidate's nodes: propose, check, repair, dedup, screen, train, reflect; each idempotent.

A candidate's walk is resumed from the archive, never from memory: a process killed in the middle of a
node re-runs the candidate from where its archive row says it is (``enter``): a candidate already
checked is not checked again, one already evaluated is not evaluated again, and a re-run proposal
rewrites its own row (the proposers are deterministic in (seed, step)). Dependencies (archive, proposer,
sandbox, settings) are held by ``SearchNodes``, outside the state, which stays small and serialisable.
Several candidates may walk at once (``[search] concurrency``): the nodes share only the archive
(thread-safe, generation numbers given atomically) and the step counter.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import EVALUATED, Archive
from lossforge.proposers.context import context_for_run, view
from lossforge.rundir.events import EventKind, emit
from lossforge.proposers.base import Proposer
from lossforge.agent.reflection import reflect_offline
from lossforge.agent.state import CandidateState, SearchState
from lossforge.agent.train_stage import training_note
from lossforge.config import RunConfig
from lossforge.candidate.fingerprint import code_hash, same_behaviour
from lossforge.sandbox.protocol import Sandbox
from lossforge.tools.core import check_candidate, screen_for_fitness


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


class StepCounter:
    """Hands out proposal step numbers, once each, to any thread."""

    def __init__(self, next_step: int = 0) -> None:
        self._next = next_step
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            step = self._next
            self._next += 1
            return step

    def at_least(self, step: int) -> None:
        """Never hand out a step below ``step`` (one already used in the archive, say)."""
        with self._lock:
            self._next = max(self._next, step)

    @property
    def next(self) -> int:
        with self._lock:
            return self._next


@dataclass
class SearchNodes:
    """The node functions, bound to one run's archive, proposer and sandbox."""

    archive: Archive
    proposer: Proposer
    sandbox: Sandbox
    config: RunConfig
    proposer_name: str = "evolution"
    deadline: float | None = None  # time.time() after which the search stops (this process only)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    running: threading.Event = field(default_factory=lambda: _set(threading.Event()))  # cleared = paused
    train_stage: Any = None  # agent.train_stage.TrainStage; made from config.train when it is enabled
    steps: StepCounter = field(default_factory=StepCounter)  # shared by the candidates in flight
    wait_for_training: bool = True  # False with concurrency > 1: submit, go on; the supervisor collects

    def __post_init__(self) -> None:
        if self.train_stage is None and self.config.train.enabled:
            from lossforge.agent.train_stage import TrainStage

            self.train_stage = TrainStage(self.config, self.archive, self.sandbox, self.stop_requested)

    def wait_while_paused(self) -> None:
        """Block between steps while paused (the TUI's pause); a stop request ends the wait."""
        if self.running.is_set():
            return
        emit(EventKind.PAUSED)
        while not self.running.wait(timeout=0.2):
            if self.stop_requested.is_set():
                return
        emit(EventKind.RESUMED)

    @property
    def beta(self) -> float:
        return self.config.proxy.screen.beta

    # -- nodes ---------------------------------------------------------------------------------
    def propose(self, state: CandidateState) -> dict[str, Any]:
        self.wait_while_paused()
        step = state["step"]
        context = context_for_run(self.archive, step, self.config)
        repair_of = state.get("repair_of")
        spent = self._budget_spent()
        if spent:
            # Out of LLM budget (spent by a candidate in flight beside this one, or between a rejection and
            # its repair): no proposal and no failed row; a rejected candidate goes on to reflect, a new
            # walk ends, and the supervisor stops the run with the state saved.
            return {"stop_reason": f"LLM budget exhausted: {spent}", "repair_of": None}
        if repair_of is not None:
            context.repair_of = view(self.archive.get(repair_of))
        started = time.perf_counter()
        try:
            proposal = self.proposer.propose(context)
        except Exception as error:  # a proposer's failure is recorded, never fatal to the search
            candidate_id = self.archive.upsert_proposal(
                step,
                name="failed-proposal",
                code="",
                code_hash="",
                proposer=self.proposer_name,
                status=CandidateStatus.FAILED,
                error=f"proposer error: {error}",
                thought=getattr(error, "raw", None) or traceback.format_exc(limit=3),
            )
            emit(EventKind.ERROR, step=step, candidate_id=candidate_id, message=f"proposer error: {error}")
            return {"candidate_id": candidate_id, "repair_of": None}
        seconds = time.perf_counter() - started
        candidate_id = self.archive.upsert_proposal(
            step,
            name=proposal.name,
            code=proposal.code,
            code_hash=code_hash(proposal.code),
            thought=proposal.thought,
            operator=proposal.operator,
            proposer=self.proposer_name,
            parent_ids=proposal.parent_ids,
            genome=proposal.genome,
            repair_of=repair_of,
            status=CandidateStatus.PROPOSED,
            timings={"propose": round(seconds, 4)},
        )
        emit(
            EventKind.PROPOSAL,
            step=step,
            candidate_id=candidate_id,
            name=proposal.name,
            thought=proposal.thought,
            operator=proposal.operator,
            parent_ids=proposal.parent_ids,
            code=proposal.code,
        )
        return {"candidate_id": candidate_id, "repair_of": None}

    def check(self, state: CandidateState) -> dict[str, Any]:
        candidate = self.archive.get(state["candidate_id"])
        if candidate.status not in (CandidateStatus.PROPOSED, CandidateStatus.CHECKING):
            return {}
        self.archive.update(candidate.id, status=CandidateStatus.CHECKING)
        emit(EventKind.CHECKING, candidate_id=candidate.id, name=candidate.name)
        report = check_candidate(self.sandbox, candidate.code, self.beta)  # the tools' code path (tools/core.py)
        self.archive.update(
            candidate.id,
            status=CandidateStatus.CHECKED if report.passed else CandidateStatus.REJECTED,
            failed_check=report.failed_check,
            check_report=report.model_dump(),
            fingerprint=report.fingerprint,
        )
        self.archive.add_timing(candidate.id, "check", report.seconds)
        emit(
            EventKind.CHECK,
            candidate_id=candidate.id,
            name=candidate.name,
            passed=report.passed,
            failed_check=report.failed_check,
            summary=report.summary(),
            seconds=report.seconds,
        )
        return {}

    def dedup(self, state: CandidateState) -> dict[str, Any]:
        candidate = self.archive.get(state["candidate_id"])
        if candidate.status != CandidateStatus.CHECKED or not self.config.search.dedup:
            return {}
        twin = self.archive.find_code(candidate.code_hash, exclude_id=candidate.id)
        if twin is None and candidate.fingerprint is not None:
            twin = next(
                (
                    other
                    for other in self.archive.with_fingerprint()
                    if other.id != candidate.id
                    and other.id < candidate.id
                    and other.fingerprint is not None
                    and same_behaviour(candidate.fingerprint, other.fingerprint)
                ),
                None,
            )
        if twin is not None:
            self.archive.update(candidate.id, status=CandidateStatus.DUPLICATE, duplicate_of=twin.id)
            emit(EventKind.DUPLICATE, candidate_id=candidate.id, name=candidate.name, duplicate_of=twin.id)
        return {}

    def screen(self, state: CandidateState) -> dict[str, Any]:
        candidate = self.archive.get(state["candidate_id"])
        if candidate.status in EVALUATED or candidate.status == CandidateStatus.FAILED:
            return {}
        self.archive.update(candidate.id, status=CandidateStatus.SCREENING)
        emit(EventKind.SCREEN_STARTED, candidate_id=candidate.id, name=candidate.name)
        proxy = self.config.proxy
        started = time.perf_counter()
        outcome = screen_for_fitness(  # the tools' code path (tools/core.py), as screen_loss runs it
            self.sandbox,
            candidate.code,
            proxy,
            self.config.search.seed,
            str(self.config.resolved_cache_dir()),
            self.config.sandbox.screen_timeout,
            threshold=self._lazy_threshold(),
        )
        fields: dict[str, Any]
        if outcome.status == CandidateStatus.EVALUATED:
            fields = {"status": CandidateStatus.EVALUATED, "fitness": outcome.fitness, "result": outcome.result}
        else:  # degenerate (with the proxy's data) or failed (the sandbox raised: no data)
            fields = {"status": outcome.status, "error": outcome.error}
            if outcome.result is not None:
                fields["result"] = outcome.result
        fields["generation"] = self.archive.record_score(candidate.id, **fields)
        self.archive.add_timing(candidate.id, "screen", time.perf_counter() - started)
        emit(
            EventKind.EVALUATED,
            candidate_id=candidate.id,
            name=candidate.name,
            status=fields["status"],
            fitness=fields.get("fitness"),
            generation=fields.get("generation"),
            error=fields.get("error"),
            evaluated=self.archive.count_evaluated(),
        )
        return {}

    def _lazy_threshold(self) -> float | None:
        """The archive's k-th best fitness when the fitness variants are screened lazily (else None)."""
        k = self.config.proxy.fitness.lazy_k
        if k is None:
            return None
        top = self.archive.top(k)
        return top[-1].fitness if len(top) == k else None

    def train(self, state: CandidateState) -> dict[str, Any]:
        """The optional train stage ([train] enabled): train and judge the candidate if it is promoted
        (with concurrency > 1 the job is submitted and its result collected when it arrives)."""
        self.train_stage.run(state["candidate_id"], wait=self.wait_for_training)
        return {}

    def reflect(self, state: CandidateState) -> dict[str, Any]:
        started = time.perf_counter()
        candidate = self.archive.get(state["candidate_id"])
        best = [c for c in self.archive.top(2) if c.id != candidate.id]
        best_fitness, best_stderr = (best[0].fitness, best[0].fitness_stderr) if best else (None, None)
        reflection = self._llm_reflection(candidate, best_fitness, state, best_stderr)
        if reflection is None:
            reflection = reflect_offline(candidate, best_fitness, best_stderr)
        note = training_note(candidate)  # the train stage's outcome, a failed job's stderr tail included
        if note:
            reflection = f"{reflection}\n{note}"
        self.archive.update(candidate.id, reflection=reflection)
        self.archive.add_timing(candidate.id, "reflect", time.perf_counter() - started)
        emit(EventKind.REFLECTION, candidate_id=candidate.id, name=candidate.name, text=reflection)
        return {}

    def _llm_reflection(
        self, candidate: Any, best_before: float | None, state: CandidateState, best_before_stderr: float | None = None
    ) -> str | None:
        """The LLM's own reflection on a candidate, when the proposer can reflect and is set to."""
        reflect = getattr(self.proposer, "reflect", None)
        settings = getattr(self.proposer, "settings", None)
        if not callable(reflect) or not candidate.code or not getattr(settings, "reflect", False):
            return None
        if self._budget_spent():  # the run stops here anyway: the offline note, no failed call logged
            return None
        from lossforge.proposers.llm.prompts import describe_outcome

        summary = describe_outcome(view(candidate), best_before=best_before, best_before_stderr=best_before_stderr, result=candidate.result)
        try:
            return reflect(summary, step=state.get("step", 0), seed=self.config.search.seed)
        except Exception as error:  # a failed reflection is logged, never fatal
            emit(EventKind.ERROR, candidate_id=candidate.id, message=f"reflection failed: {error}")
            return None

    def repair(self, state: CandidateState) -> dict[str, Any]:
        """Hand the failed candidate back to the proposer for a bounded number of repairs (the repair is
        a new proposal: it takes the next step number)."""
        return {"repair_of": state["candidate_id"], "repair_attempts": state.get("repair_attempts", 0) + 1,
                "step": self.steps.take()}

    # -- routing -------------------------------------------------------------------------------
    def _budget_spent(self) -> str | None:
        """Why the proposer's LLM budget allows no further call, or None (also for proposers without one)."""
        budget = getattr(self.proposer, "budget", None)
        return budget.exhausted() if budget is not None else None

    def stop_reason(self, state: SearchState) -> str | None:
        if self.stop_requested.is_set():
            return "stop requested"
        spent = self._budget_spent()
        if spent:
            return f"LLM budget exhausted: {spent}"
        if self.archive.count_evaluated() >= state.get("target_evaluated", 0):
            return "generations"
        target = self.config.search.target_fitness
        if target is not None:
            top = self.archive.top(1)
            if top and top[0].fitness is not None and top[0].fitness >= target:
                return "target fitness"
        if self.deadline is not None and time.time() >= self.deadline:
            return "wall time"
        if state.get("rejected_in_a_row", 0) >= self.config.search.max_proposals_per_generation:
            return "stalled: too many rejected or duplicate proposals in a row"
        return None

    def enter(self, state: CandidateState) -> str:
        """Where a candidate's walk starts: ``propose`` for a new one; for one resumed after a crash, the
        node its latest archive row calls for (``end`` when it was already reflected on)."""
        candidate = self.archive.get(state["candidate_id"]) if state.get("candidate_id") is not None else None
        if candidate is None:
            return "propose"
        if candidate.reflection is not None:
            return "end"
        status = candidate.status
        if status in (CandidateStatus.PROPOSED, CandidateStatus.CHECKING):
            return "check"
        if status == CandidateStatus.REJECTED:
            return self.after_check(state)
        if status == CandidateStatus.CHECKED:
            return "dedup"
        if status == CandidateStatus.SCREENING:
            return "screen"
        if status in EVALUATED and self.train_stage is not None:
            return "train"
        return "reflect"  # duplicate, failed, or scored without a train stage

    def after_propose(self, state: CandidateState) -> str:
        if state.get("stop_reason"):  # the budget ran out: reflect on the rejected candidate, if any
            return "reflect" if state.get("candidate_id") is not None else "end"
        candidate = self.archive.get(state["candidate_id"])
        return "reflect" if candidate.status == CandidateStatus.FAILED else "check"

    def after_check(self, state: CandidateState) -> str:
        candidate = self.archive.get(state["candidate_id"])
        if candidate.status == CandidateStatus.REJECTED:
            can_repair = getattr(self.proposer, "supports_repair", False)
            if can_repair and state.get("repair_attempts", 0) < self.config.search.max_repair_attempts:
                return "repair"
            return "reflect"
        return "dedup"

    def after_dedup(self, state: CandidateState) -> str:
        candidate = self.archive.get(state["candidate_id"])
        return "reflect" if candidate.status == CandidateStatus.DUPLICATE else "screen"
