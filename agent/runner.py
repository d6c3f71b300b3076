"""Running a search in a run directory: lock, config check, world, checkpointer, resume, events.

`run_search(run_dir, config)` is what `lossforge run` calls. Guarantees:
- One process per run directory (`RunLock`); a second one is refused with a clear message.
- A run directory keeps the settings that make its fitness values comparable (seed, proxy); a later
  invocation with different ones is refused before anything runs, and nothing in the directory changes.
- Resume: if the last invocation was interrupted (killed, crashed), the graph continues from its last
  checkpoint with its original target and finishes the candidates that were in flight; if it finished,
  a new invocation adds `generations` more evaluated candidates. Work is counted by evaluated candidates
  in the archive, never by steps. A run directory of the single-graph search (before `concurrency`)
  continues too: its state is carried over once.
- `[search] concurrency = K` keeps K candidates in flight (agent/supervisor.py); the sandbox runs up to
  K children at once. K = 1 is the original search.
- Every event goes to `events.jsonl` in the run directory (and to stdout as JSON lines if asked), in the
  order the events happened.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from langgraph.checkpoint.sqlite import SqliteSaver

from lossforge.errors import UsageError
from lossforge.rundir.archive import FITNESS_IDENTITY_META, Archive
from lossforge.rundir.events import Event, EventKind, EventLog, make_event
from lossforge.agent.graph import build_candidate_graph, build_graph
from lossforge.rundir.lock import RunLock
from lossforge.agent.nodes import SearchNodes
from lossforge.agent.supervisor import Supervisor
from lossforge.proposers.base import Proposer
from lossforge.proposers.factory import make_proposer
from lossforge.config import RunConfig
from lossforge.sandbox.protocol import Sandbox
from lossforge.trainer.proxy.api import prepare

THREAD_ID = "supervisor"
SINGLE_GRAPH_THREAD_ID = "search"  # the checkpoints of the search before the supervisor (carried over once)
ARCHIVE_FILE = "archive.sqlite"
CHECKPOINT_FILE = "checkpoints.sqlite"
EVENTS_FILE = "events.jsonl"


class ConfigMismatch(UsageError):
    """The run directory was started with settings that make fitness values incomparable to these."""


@dataclass
class RunSummary:
    run_dir: str
    resumed: bool
    evaluated_before: int
    evaluated: int
    best: dict[str, Any] | None
    stop_reason: str | None
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # wall, work (in the stages), agent (own time)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the run directory, {new!r} now"]


#: [proxy.screen] fields added after run directories existed, with the value that trains as before them:
#: a directory that does not name one was made with that behaviour.
SCREEN_FIELDS_ADDED = {"lr_schedule": "constant", "warmup_ratio": 0.0}


def check_config_compatible(archive: Archive, config: RunConfig) -> None:
    """Refuse settings that would make this directory's fitness values incomparable."""
    stored = archive.get_meta(FITNESS_IDENTITY_META)
    current = json.loads(json.dumps(config.fitness_identity(), default=str))
    if stored is None:
        return
    proxy = stored.get("proxy")
    if isinstance(proxy, dict):
        proxy.setdefault("fitness", {"variants": []})  # made before [proxy.fitness]: one screen per candidate
        if isinstance(proxy.get("screen"), dict):
            for name, before in SCREEN_FIELDS_ADDED.items():
                proxy["screen"].setdefault(name, before)
    differences = _diff(stored, current)
    if differences:
        hint = ""
        if any(d.startswith("proxy.fitness") for d in differences) and stored["proxy"]["fitness"] == {"variants": []}:
            hint = "\nThis run reads fitness from one screen: add [proxy.fitness] variants = [] to continue it."
        raise ConfigMismatch(
            "this run directory was started with other settings that change fitness values:\n  - "
            + "\n  - ".join(differences)
            + hint
            + "\nUse the original settings to continue it (see config.json in the run directory), or start a new --run-dir."
        )


def default_sandbox(config: RunConfig) -> Sandbox:
    """The run's sandbox: up to ``[search] concurrency`` children at once on this machine, or with
    ``[search] executor = "ray"`` each check and screen a Ray task (a screen reserving ``[proxy.screen]
    threads`` CPUs) in a sandbox on its worker, on the cluster at ``ray_address`` (none: a local Ray)."""
    from lossforge.sandbox.factory import sandbox_for_search

    return sandbox_for_search(config.sandbox, executor=config.search.executor, ray_address=config.search.ray_address,
                              max_concurrency=config.search.concurrency, run_cpus=config.proxy.screen.threads)


def _carried_over(archive: Archive, old: dict[str, Any]) -> dict[str, Any]:
    """The supervisor's state for a run directory whose single-graph search was interrupted."""
    in_flight: list[int] = []
    candidate_id = old.get("candidate_id") or old.get("repair_of")
    if candidate_id is not None:
        root = archive.get(candidate_id)
        while root.repair_of is not None:
            root = archive.get(root.repair_of)
        in_flight.append(root.step)
    return {"step": old.get("step", 0), "target_evaluated": old.get("target_evaluated", 0), "in_flight": in_flight,
            "rejected_in_a_row": old.get("rejected_in_a_row", 0), "stop_reason": None}


def run_search(
    run_dir: Path,
    config: RunConfig,
    *,
    echo_jsonl: TextIO | None = None,
    on_event: Callable[[Event], None] | None = None,
    proposer: Proposer | None = None,
    sandbox: Sandbox | None = None,
    stop_event: threading.Event | None = None,
    running_event: threading.Event | None = None,
    handle_signals: bool = False,
) -> RunSummary:
    """Run (or resume) the search in `run_dir` until a stopping rule fires. See the module docstring.

    `stop_event` set: stop after the current step. `running_event` cleared: pause before the next
    proposal until it is set again (the TUI's controls).
    """
    run_dir = Path(run_dir)
    started = time.time()
    with ExitStack() as stack:
        stack.enter_context(RunLock(run_dir))
        archive = Archive(run_dir / ARCHIVE_FILE)
        stack.callback(archive.close)
        check_config_compatible(archive, config)
        archive.set_meta(FITNESS_IDENTITY_META, json.loads(json.dumps(config.fitness_identity(), default=str)))
        (run_dir / "config.json").write_text(config.model_dump_json(indent=2))

        events = EventLog(run_dir / EVENTS_FILE, echo=echo_jsonl)
        stack.callback(events.close)
        if on_event is not None:
            events.subscribe(on_event)

        if proposer is None:  # first, so a missing API key fails before the world is built
            proposer, proposer_name = make_proposer(config, archive)
        else:
            proposer_name = type(proposer).__name__

        events.write(make_event(EventKind.PREPARING, message=f"loading the proxy world of seed {config.search.seed}"))
        task = prepare(config.proxy, config.search.seed, config.resolved_cache_dir())
        events.write(make_event(EventKind.PREPARED, stats=task.stats))
        if sandbox is None:
            sandbox = default_sandbox(config)
            stack.callback(sandbox.close)

        nodes = SearchNodes(
            archive=archive,
            proposer=proposer,
            sandbox=sandbox,
            config=config,
            proposer_name=proposer_name,
            deadline=None if config.search.max_minutes is None else started + 60 * config.search.max_minutes,
            stop_requested=stop_event or threading.Event(),
            wait_for_training=config.search.concurrency == 1,
        )
        if running_event is not None:
            nodes.running = running_event
        if handle_signals and threading.current_thread() is threading.main_thread():
            _install_signal_handlers(nodes.stop_requested, stack)

        supervisor = Supervisor(nodes, build_candidate_graph(nodes), config.search.concurrency, sink=events.write)
        stack.callback(supervisor.close)
        connection = sqlite3.connect(run_dir / CHECKPOINT_FILE, check_same_thread=False)
        stack.callback(connection.close)
        checkpointer = SqliteSaver(connection)
        graph = build_graph(supervisor, checkpointer)
        thread = {"configurable": {"thread_id": THREAD_ID}, "recursion_limit": 10_000_000}

        snapshot = graph.get_state(thread)
        old = {} if snapshot.values else checkpointer.get_tuple({"configurable": {"thread_id": SINGLE_GRAPH_THREAD_ID}})
        old_values = old.checkpoint["channel_values"] if old else {}
        evaluated_before = archive.count_evaluated()
        resumed = bool(snapshot.next) or _was_interrupted(archive, old_values)
        if snapshot.next:
            graph_input = None
            target = snapshot.values.get("target_evaluated")
            in_flight = snapshot.values.get("in_flight") or []
            events.write(make_event(EventKind.RUN_RESUMED, evaluated=evaluated_before, target=target, next=list(snapshot.next),
                                    in_flight=in_flight))
        elif resumed:  # an interrupted single-graph run: its state, once, as the supervisor's
            graph_input = _carried_over(archive, old_values)
            target = graph_input["target_evaluated"]
            events.write(make_event(EventKind.RUN_RESUMED, evaluated=evaluated_before, target=target, next=["dispatch"],
                                    in_flight=graph_input["in_flight"]))
        else:
            target = evaluated_before + config.search.generations
            graph_input = {"target_evaluated": target, "stop_reason": None, "rejected_in_a_row": 0, "in_flight": []}
            if not snapshot.values:
                graph_input["step"] = old_values.get("step", 0)
            events.write(make_event(EventKind.RUN_STARTED, evaluated=evaluated_before, target=target, proposer=proposer_name,
                                    concurrency=config.search.concurrency))

        for chunk in graph.stream(graph_input, thread, stream_mode="custom", durability="sync"):
            events.write(chunk)

        final = graph.get_state(thread).values
        top = archive.top(1)
        summary = RunSummary(
            run_dir=str(run_dir),
            resumed=resumed,
            evaluated_before=evaluated_before,
            evaluated=archive.count_evaluated(),
            best=None if not top else {"id": top[0].id, "name": top[0].name, "fitness": top[0].fitness},
            stop_reason=final.get("stop_reason") or nodes.stop_reason(final),
            seconds=time.time() - started,
            counts=archive.counts(),
            timings=supervisor.timings(),
        )
        events.write(make_event(EventKind.RUN_STOPPED, **{k: v for k, v in summary.__dict__.items() if k != "run_dir"}))
        return summary


def _install_signal_handlers(stop: threading.Event, stack: ExitStack) -> None:
    """First SIGINT/SIGTERM: stop after the current step (state saved). Second: stop now."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    stack.callback(lambda: [signal.signal(sig, old) for sig, old in previous.items()])



def _was_interrupted(archive: Archive, old_values: dict[str, Any]) -> bool:
    """Whether the single-graph search of this run directory stopped before its end: no stopping rule
    had fired, and a candidate was in flight or the target was not reached."""
    if not old_values or old_values.get("stop_reason") is not None:
        return False
    in_flight = old_values.get("candidate_id") is not None or old_values.get("repair_of") is not None
    return in_flight or archive.count_evaluated() < old_values.get("target_evaluated", 0)
