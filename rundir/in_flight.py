"""The candidates in flight in a run, and what each is doing: one reading for `lossforge status` and the TUI.

The supervisor publishes the first steps of the candidate walks in flight in the archive's meta
``in_flight`` (``IN_FLIGHT_META``; ``[]`` when none, absent for a run older than the supervisor).
``in_flight(archive)`` resolves each to the latest candidate of its walk (``Archive.latest_repair``: a
repair is a new row) and names its stage from the archive row alone:

===============  ======================================================================================
``proposing``    no row yet: the proposer (an LLM call, perhaps) is at work
``checking``     proposed or checking: the policy and unit checks in the sandbox
``deduplicating`` checked: compared with the archive's code and behaviour
``screening``    the proxy screen in the sandbox
``training``     scored and promoted: its training job (``result["train"]``) has not finished
``repairing``    rejected by a check, proposed by an LLM (the proposer that repairs): the repair's
                 proposal is being made (a candidate whose repairs ran out shows this while reflected on)
``reflecting``   scored, rejected (by a proposer that does not repair), duplicate or failed: its reflection
``finishing``    reflected on: the walk ends and the supervisor takes it out of flight
===============  ======================================================================================

A training job that outlives its walk (``[search] concurrency`` > 1 submits it and goes on) is in flight
too: it is listed after the walks with ``slot`` None and stage ``training``.

What it guarantees
------------------
* Read-only: it only reads the archive (a read-only connection works while the run writes).
* Ordered: the walks in the order the supervisor published them, then background training jobs by
  candidate id; nothing is listed twice.
* Nothing in flight (a finished or never-started run) is an empty list.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Iterable

from lossforge.candidate.status import SCORED, CandidateStatus
from lossforge.rundir.archive import IN_FLIGHT_META, Archive, Candidate

__all__ = ["IN_FLIGHT_META", "InFlight", "Stage", "TRAIN_FINISHED", "in_flight", "stage_of", "training_pending"]

TRAIN_FINISHED = ("succeeded", "failed", "timeout", "cancelled", "rejected", "error")  # a training job's end states
REPAIRING_PROPOSERS = ("llm",)  # the proposers whose rejected candidates get a repair (supports_repair)


class Stage(StrEnum):
    """What a candidate in flight is doing (see the module docstring)."""

    PROPOSING = "proposing"
    CHECKING = "checking"
    DEDUPLICATING = "deduplicating"
    SCREENING = "screening"
    TRAINING = "training"
    REPAIRING = "repairing"
    REFLECTING = "reflecting"
    FINISHING = "finishing"


@dataclass(frozen=True)
class InFlight:
    """One candidate in flight: its walk's first step (``slot``; None for a background training job), the
    step it is at, its latest row (None while proposing) and its stage; ``job`` is the training job's id
    and status when it has one."""

    slot: int | None
    step: int
    stage: Stage
    candidate_id: int | None = None
    name: str | None = None
    status: str | None = None
    job_id: str | None = None
    job_status: str | None = None

    def public(self) -> dict[str, Any]:
        """JSON-ready (for `lossforge status --json`)."""
        return {**asdict(self), "stage": str(self.stage), "status": None if self.status is None else str(self.status)}

    def label(self) -> str:
        """One short phrase: ``#12 smooth_sigmoid screening`` or ``step 14 proposing``."""
        who = f"#{self.candidate_id} {self.name}" if self.candidate_id is not None else f"step {self.step}"
        job = f" (job {self.job_status})" if self.stage == Stage.TRAINING and self.job_status else ""
        return f"{who} {self.stage}{job}"


def training_pending(candidate: Candidate) -> bool:
    """Whether the candidate has a submitted training job that has not finished."""
    record = (candidate.result or {}).get("train")
    return isinstance(record, dict) and bool(record.get("job_id")) and record.get("status") not in TRAIN_FINISHED


def stage_of(candidate: Candidate | None) -> Stage:
    """The stage of a walk whose latest row is ``candidate`` (None: no row yet)."""
    if candidate is None:
        return Stage.PROPOSING
    if candidate.reflection is not None:
        return Stage.FINISHING
    status = candidate.status
    if status in (CandidateStatus.PROPOSED, CandidateStatus.CHECKING):
        return Stage.CHECKING
    if status == CandidateStatus.CHECKED:
        return Stage.DEDUPLICATING
    if status == CandidateStatus.SCREENING:
        return Stage.SCREENING
    if status in SCORED and training_pending(candidate):
        return Stage.TRAINING
    if status == CandidateStatus.REJECTED and candidate.proposer in REPAIRING_PROPOSERS:
        return Stage.REPAIRING
    return Stage.REFLECTING


def _entry(slot: int | None, step: int, candidate: Candidate | None, stage: Stage) -> InFlight:
    if candidate is None:
        return InFlight(slot=slot, step=step, stage=stage)
    record = (candidate.result or {}).get("train")
    record = record if isinstance(record, dict) else {}
    return InFlight(slot=slot, step=candidate.step, stage=stage, candidate_id=candidate.id, name=candidate.name,
                    status=candidate.status, job_id=record.get("job_id"), job_status=record.get("status"))


def in_flight(archive: Archive, candidates: Iterable[Candidate] | None = None) -> list[InFlight]:
    """The candidates in flight in ``archive``'s run (see the module docstring). ``candidates``: the
    archive's rows when the caller has just read them (saves a second read), else they are read here.

    Raises ``ValueError`` when the meta ``in_flight`` is not a list of step numbers (not a lossforge
    archive, or one written by an incompatible version)."""
    slots = archive.get_meta(IN_FLIGHT_META) or []
    if not isinstance(slots, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in slots):
        raise ValueError(f"the archive's meta {IN_FLIGHT_META!r} should be a list of step numbers, not {slots!r}: "
                         "was this run directory written by another version of lossforge?")
    out: list[InFlight] = []
    listed: set[int] = set()
    for slot in dict.fromkeys(slots):
        latest = archive.latest_repair(slot)
        out.append(_entry(slot, slot, latest, stage_of(latest)))
        if latest is not None:
            listed.add(latest.id)
    rows = archive.all() if candidates is None else candidates
    for candidate in sorted(rows, key=lambda c: c.id):
        if candidate.id not in listed and training_pending(candidate):
            out.append(_entry(None, candidate.step, candidate, Stage.TRAINING))
    return out
