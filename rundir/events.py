"""Events of a search: what the nodes emit and where they go.

Nodes call `emit(kind, **data)`. Inside a LangGraph run this goes through the graph's custom stream
(`get_stream_writer`), so any consumer of `graph.stream(..., stream_mode="custom")` (the CLI, the TUI)
sees it. The runner appends every event as one JSON line to `events.jsonl` in the run directory, which
is how a run is watched from another process. The kinds are `EventKind` (a StrEnum: the JSON holds
its plain value).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from enum import StrEnum
from typing import Any, Callable, TextIO

from langgraph.config import get_stream_writer

Event = dict[str, Any]


class EventKind(StrEnum):
    """What happened. The search emits the first group, the LLM proposer the second, training the third."""

    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    RUN_STOPPED = "run_stopped"
    PREPARING = "preparing"            # loading or building the proxy world
    PREPARED = "prepared"
    PROPOSAL = "proposal"
    CHECKING = "checking"
    CHECK = "check"
    DUPLICATE = "duplicate"
    SCREEN_STARTED = "screen_started"
    EVALUATED = "evaluated"
    REFLECTION = "reflection"
    ERROR = "error"
    PAUSED = "paused"
    RESUMED = "resumed"
    TOKEN = "token"                    # streamed text; `channel` "reasoning" or "answer"
    LLM_CALL = "llm_call"              # usage and cost of one call
    REASONING = "reasoning"            # a reasoning model's whole reasoning
    TRUNCATED = "truncated"            # an answer cut off at the token limit
    TRAIN_STARTED = "train_started"
    TRAIN_SUBMITTED = "train_submitted"
    TRAIN_PROGRESS = "train_progress"
    TRAINED = "trained"
    BUDGET = "budget"                  # GPU-hours against their limit: the TUI shows it; nothing emits it yet


def make_event(kind: EventKind, **data: Any) -> Event:
    return {"kind": str(kind), "time": round(time.time(), 3), **data}


def emit(kind: EventKind, **data: Any) -> None:
    """Send an event on the graph's custom stream (no-op outside a graph run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(make_event(kind, **data))


class EventLog:
    """Appends events to a JSON-lines file and forwards them to optional listeners.

    Thread-safe: candidates in flight write from their workers; each event is one whole line, and the
    file's order is the order in which events happened (listeners see that order too)."""

    def __init__(self, path: Path, echo: TextIO | None = None) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", buffering=1)
        self._echo = echo
        self._listeners: list[Callable[[Event], None]] = []
        self._lock = threading.RLock()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def write(self, event: Event) -> None:
        line = json.dumps(event, default=str)
        with self._lock:
            self._file.write(line + "\n")
            if self._echo is not None:
                self._echo.write(line + "\n")
                self._echo.flush()
            for listener in self._listeners:
                listener(event)

    def close(self) -> None:
        self._file.close()


def read_events(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Events appended to `path` since byte `offset`, and the new offset (for followers such as the TUI)."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete, _, _ = data.rpartition(b"\n")
    if not complete:
        return [], offset
    events = [json.loads(line) for line in complete.split(b"\n") if line.strip()]
    return events, offset + len(complete) + 1
