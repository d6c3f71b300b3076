"""Messages from the search (a worker thread or a followed event log) to the UI thread."""
from __future__ import annotations

from typing import Any

from textual.message import Message


class SearchEvent(Message):
    """One event of the search (see agent/events.py for the kinds)."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__()
        self.event = event


class SearchFinished(Message):
    """The search worker returned (summary) or failed (error)."""

    def __init__(self, summary: dict[str, Any] | None, error: str | None = None) -> None:
        super().__init__()
        self.summary = summary
        self.error = error
