"""The supervisor: keeps up to ``concurrency`` candidates in flight and folds their outcomes into the search.

``dispatch`` hands out step numbers and starts one walk of the candidate graph per free slot on a pool of
worker threads (the proposal, its checks, screen, training and reflection run there, so K proposals, K
LLM calls and K sandbox children can be under way at once). ``collect`` waits for the next walk to end,
in completion order, and applies the stopping rules. Both are nodes of the checkpointed supervisor graph
(``agent/graph.py``); the candidates in flight are part of its state.

What it guarantees
------------------
* ``concurrency = 1`` walks one candidate at a time with the step numbers, order and stopping rules of
  the original single-graph search, so a seed gives the same archive.
* A proposal sees the archive as it is when the proposal is made (other candidates may be in flight).
* Never more than ``target - evaluated`` candidates in flight, so a run does not evaluate past its target.
* Resume (kill -9 included): the candidates in flight at the last checkpoint are walked again from their
  archive rows (``SearchNodes.enter``): nothing finished is lost or redone, each interrupted one is
  finished once. A step number is never handed out twice (the counter starts above the archive's largest).
* A stop (request, wall time, budget) starts nothing new and lets the candidates in flight finish.
* With concurrency > 1 a promoted candidate's training job is submitted without waiting; ``collect``
  records results as they arrive and, when the search is otherwise done, waits for the jobs still running
  (a stop request ends that wait; a later invocation collects them).
* ``timings()``: the wall time of the search, the work inside the candidates' nodes (proposal, check,
  dedup, screen, training, reflection: the time their calls took, summed over the walks) and the agent's
  own time (the supervisor's time not spent waiting, plus each walk's time outside its nodes).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from langchain_core.runnables import RunnableConfig

from lossforge.agent.nodes import SearchNodes
from lossforge.agent.state import CandidateState, SearchState
from lossforge.rundir.archive import EVALUATED, IN_FLIGHT_META

__all__ = ["IN_FLIGHT_META", "Supervisor", "timed"]

class _Work:
    """Seconds one walk spent inside its nodes (LangGraph may run a node on any thread)."""

    def __init__(self) -> None:
        self.seconds = 0.0


def timed(node: Callable[[Any], Any]) -> Callable[..., Any]:
    """``node`` with its wall time added to the walk's work (``Supervisor.timings``)."""

    def run(state: Any, config: RunnableConfig) -> Any:
        started = time.perf_counter()
        try:
            return node(state)
        finally:
            work = (config.get("configurable") or {}).get("work")
            if work is not None:
                work.seconds += time.perf_counter() - started

    run.__name__ = getattr(node, "__name__", "node")
    return run


class Supervisor:
    """Runs candidate walks on ``concurrency`` worker threads; ``dispatch`` and ``collect`` are graph nodes."""

    def __init__(self, nodes: SearchNodes, candidate_graph: Any, concurrency: int = 1,
                 sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.nodes = nodes
        self.archive = nodes.archive
        self.candidate_graph = candidate_graph
        self.concurrency = concurrency
        self.sink = sink or (lambda event: None)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="candidate")
        self._running: dict[int, Future] = {}
        self._done: queue.Queue[int] = queue.Queue()
        self._lock = threading.Lock()
        self._agent_seconds = 0.0
        self._walk_overhead = 0.0
        self._work_seconds = 0.0
        self._started = time.perf_counter()

    # -- graph nodes ---------------------------------------------------------------------------
    def dispatch(self, state: SearchState) -> dict[str, Any]:
        started = time.perf_counter()
        in_flight = list(state.get("in_flight") or [])
        self.nodes.steps.at_least(max(state.get("step", 0), self.archive.max_step() + 1))
        self._resume(in_flight)
        reason = state.get("stop_reason") or self.nodes.stop_reason(state)
        if not reason:
            target = state.get("target_evaluated", 0)
            evaluated = self.archive.count_evaluated()
            while len(in_flight) < self.concurrency and evaluated + len(in_flight) < target:
                slot = self.nodes.steps.take()
                in_flight.append(slot)
                self._start(slot, resumed=False)
        self._publish(in_flight)
        self._agent_seconds += time.perf_counter() - started
        return {"in_flight": in_flight, "step": self.nodes.steps.next, "stop_reason": reason}

    def collect(self, state: SearchState) -> dict[str, Any]:
        in_flight = list(state.get("in_flight") or [])
        rejected = state.get("rejected_in_a_row", 0)
        reason = state.get("stop_reason")
        self._resume(in_flight)
        finished = self._wait(in_flight)
        started = time.perf_counter()
        for slot in finished:
            final = self._running.pop(slot).result()  # a walk's unexpected error ends the run (state saved)
            candidate_id = final.get("candidate_id")
            if candidate_id is not None:  # None: the walk stopped before proposing (the LLM budget ran out)
                rejected = 0 if self.archive.get(candidate_id).status in EVALUATED else rejected + 1
            reason = reason or final.get("stop_reason")
            in_flight.remove(slot)
        training = self.nodes.train_stage
        if training is not None and not self.nodes.wait_for_training:
            training.collect_pending()
        reason = reason or self.nodes.stop_reason({**state, "rejected_in_a_row": rejected})
        self._publish(in_flight)
        self._agent_seconds += time.perf_counter() - started
        return {"in_flight": in_flight, "rejected_in_a_row": rejected, "stop_reason": reason}

    def after_dispatch(self, state: SearchState) -> str:
        return "collect" if state.get("in_flight") or self._training_pending() else "end"

    def after_collect(self, state: SearchState) -> str:
        if not state.get("stop_reason"):
            return "dispatch"  # refill the free slots (dispatch goes on to collect while any is in flight)
        return "collect" if state.get("in_flight") or self._training_pending() else "end"

    # -- workers -------------------------------------------------------------------------------
    def _resume(self, in_flight: list[int]) -> None:
        """Walk again the candidates in flight that no thread of this process is walking (a resumed run)."""
        for slot in in_flight:
            if slot not in self._running:
                self._start(slot, resumed=True)

    def _start(self, slot: int, *, resumed: bool) -> None:
        initial: CandidateState = {"slot": slot, "step": slot, "candidate_id": None, "repair_attempts": 0,
                                   "repair_of": None, "stop_reason": None}
        if resumed:
            latest, repairs = self._chain(slot)
            if latest is not None:
                initial.update(step=latest.step, candidate_id=latest.id, repair_attempts=repairs)
        future = self._pool.submit(self._walk, initial)
        future.add_done_callback(lambda _: self._done.put(slot))
        self._running[slot] = future

    def _chain(self, slot: int) -> tuple[Any, int]:
        """The latest candidate of the walk that began at ``slot`` and how many repairs led to it."""
        latest = self.archive.latest_repair(slot)
        repairs, current = 0, latest
        while current is not None and current.step != slot and current.repair_of is not None:
            repairs += 1
            current = self.archive.get(current.repair_of)
        return latest, repairs

    def _walk(self, initial: CandidateState) -> dict[str, Any]:
        """One candidate's walk (on a worker thread): the candidate graph's events go to the sink."""
        started = time.perf_counter()
        work = _Work()
        final: dict[str, Any] = dict(initial)
        config: RunnableConfig = {"recursion_limit": 1000, "configurable": {"work": work}}
        for mode, chunk in self.candidate_graph.stream(initial, config, stream_mode=["custom", "values"]):
            if mode == "custom":
                self.sink(chunk)
            else:
                final = chunk
        wall = time.perf_counter() - started
        with self._lock:
            self._work_seconds += work.seconds
            self._walk_overhead += max(0.0, wall - work.seconds)
        return final

    def _wait(self, in_flight: list[int]) -> list[int]:
        """The slots whose walks ended, in completion order (at least one when any is in flight)."""
        if not in_flight:
            pending = self._training_pending()
            if pending:
                self.nodes.stop_requested.wait(self.nodes.config.train.poll_s)
            return []
        finished = [self._done.get()]
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return [slot for slot in finished if slot in in_flight]

    def _training_pending(self) -> bool:
        training = self.nodes.train_stage
        if training is None or self.nodes.wait_for_training or self.nodes.stop_requested.is_set():
            return False
        return bool(training.pending())

    def _publish(self, in_flight: list[int]) -> None:
        self.archive.set_meta(IN_FLIGHT_META, list(in_flight))

    # -- accounting ----------------------------------------------------------------------------
    def timings(self) -> dict[str, float]:
        """Seconds: ``wall`` since the supervisor was made, ``work`` in the candidates' stages, ``agent``
        (the supervisor's own time plus each walk's time outside its stages)."""
        with self._lock:
            return {"wall": round(time.perf_counter() - self._started, 3), "work": round(self._work_seconds, 3),
                    "agent": round(self._agent_seconds + self._walk_overhead, 3)}

    def close(self) -> None:
        """Stop the pool (walks still running finish their current node; nothing new starts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
