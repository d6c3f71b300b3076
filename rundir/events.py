"""Events of a search: what the nodes emit and where they go.

Nodes call `emit(kind, **data)`. Inside a LangGraph run this goes through the graph's custom stream
(`get_stream_writer`), so any consumer of `graph.stream(..., stream_mode="custom")` (the CLI, the TUI)
sees it. The runner appends every event as one JSON line to `events.jsonl` in the run directory, which
is how a run is watched from another process. Event kinds: run_started, run_resumed, proposal,
check, duplicate, screen_started, evaluated, reflection, run_stopped, error, paused, resumed, and from
the LLM proposer token (streamed text; `channel` "reasoning" or "answer"), llm_call (usage and cost),
reasoning (a reasoning model's whole reasoning) and truncated (an answer cut off at the token limit).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from langgraph.config import get_stream_writer

Event = dict[str, Any]


def make_event(kind: str, **data: Any) -> Event:
    return {"kind": kind, "time": round(time.time(), 3), **data}


def emit(kind: str, **data: Any) -> None:
    """Send an event on the graph's custom stream (no-op outside a graph run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(make_event(kind, **data))


class EventLog:
    """Appends events to a JSON-lines file and forwards them to optional listeners."""

    def __init__(self, path: Path, echo: TextIO | None = None) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", buffering=1)
        self._echo = echo
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def write(self, event: Event) -> None:
        line = json.dumps(event, default=str)
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
