"""The agent's reasoning (proposals, streamed tokens, reflections) and the log of events and errors."""
from __future__ import annotations

from rich.markdown import Markdown
from textual.containers import VerticalScroll
from textual.widgets import RichLog, Static

MAX_ENTRIES = 40


class ReasoningView(VerticalScroll):
    """Markdown of the latest proposals and reflections, with the LLM's tokens streamed into the last one."""

    DEFAULT_CSS = "ReasoningView { height: 1fr; border: round $primary; } ReasoningView Static { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[str] = []
        self.streaming = ""
        self.border_title = "reasoning"

    def compose(self):
        yield Static("", id="reasoning-text")

    def add(self, markdown: str) -> None:
        if self.streaming:
            self.entries.append(self.streaming)
            self.streaming = ""
        self.entries = (self.entries + [markdown])[-MAX_ENTRIES:]
        self._show_text()

    def stream(self, token: str) -> None:
        self.streaming += token
        self._show_text()

    def _show_text(self) -> None:
        text = "\n\n".join(self.entries + ([self.streaming] if self.streaming else []))
        self.query_one("#reasoning-text", Static).update(Markdown(text or "_waiting for the first proposal..._"))
        self.scroll_end(animate=False)


class EventLog(RichLog):
    DEFAULT_CSS = "EventLog { height: 7; border: round $secondary; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=True, markup=True, **kwargs)
        self.border_title = "events"
