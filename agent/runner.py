"""Running a search in a run directory: lock, config check, world, checkpointer, resume, events.

`run_search(run_dir, config)` is what `lossforge run` calls. Guarantees:
- One process per run directory (`RunLock`); a second one is refused with a clear message.
- A run directory keeps the settings that make its fitness values comparable (seed, proxy); a later
  invocation with different ones is refused before anything runs, and nothing in the directory changes.
- Resume: if the last invocation was interrupted (killed, crashed), the graph continues from its last
  checkpoint with its original target; if it finished, a new invocation adds `generations` more
  evaluated candidates. Work is counted by evaluated candidates in the archive, never by steps.
- Every event goes to `events.jsonl` in the run directory (and to stdout as JSON lines if asked).
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

from lossforge.rundir.archive import Archive
from lossforge.rundir.events import Event, EventKind, EventLog, make_event
from lossforge.agent.graph import build_graph
from lossforge.rundir.lock import RunLock
from lossforge.agent.nodes import SearchNodes
from lossforge.proposers.base import Proposer
from lossforge.proposers.factory import make_proposer
from lossforge.config import RunConfig
from lossforge.sandbox.protocol import Sandbox
from lossforge.trainer.proxy.api import prepare

THREAD_ID = "search"
ARCHIVE_FILE = "archive.sqlite"
CHECKPOINT_FILE = "checkpoints.sqlite"
EVENTS_FILE = "events.jsonl"


class ConfigMismatch(ValueError):
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


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the run directory, {new!r} now"]


def check_config_compatible(archive: Archive, config: RunConfig) -> None:
    """Refuse settings that would make this directory's fitness values incomparable."""
    stored = archive.get_meta("fitness_identity")
    current = json.loads(json.dumps(config.fitness_identity(), default=str))
    if stored is None:
        return
    if isinstance(stored.get("proxy"), dict) and "fitness" not in stored["proxy"]:
        stored["proxy"]["fitness"] = {"variants": []}  # made before [proxy.fitness]: one screen per candidate
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
    from lossforge.sandbox.factory import sandbox_from_config

    return sandbox_from_config(config.sandbox)


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
        archive.set_meta("fitness_identity", json.loads(json.dumps(config.fitness_identity(), default=str)))
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
        )
        if running_event is not None:
            nodes.running = running_event
        if handle_signals and threading.current_thread() is threading.main_thread():
            _install_signal_handlers(nodes.stop_requested, stack)

        connection = sqlite3.connect(run_dir / CHECKPOINT_FILE, check_same_thread=False)
        stack.callback(connection.close)
        graph = build_graph(nodes, SqliteSaver(connection))
        thread = {"configurable": {"thread_id": THREAD_ID}, "recursion_limit": 10_000_000}

        snapshot = graph.get_state(thread)
        evaluated_before = archive.count_evaluated()
        resumed = bool(snapshot.next)
        if resumed:
            graph_input = None
            target = snapshot.values.get("target_evaluated")
            events.write(make_event(EventKind.RUN_RESUMED, evaluated=evaluated_before, target=target, next=list(snapshot.next)))
        else:
            target = evaluated_before + config.search.generations
            graph_input = {"target_evaluated": target, "stop_reason": None, "rejected_in_a_row": 0, "candidate_id": None}
            if not snapshot.values:
                graph_input.update(step=0, repair_attempts=0, repair_of=None)
            events.write(make_event(EventKind.RUN_STARTED, evaluated=evaluated_before, target=target, proposer=proposer_name))

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
