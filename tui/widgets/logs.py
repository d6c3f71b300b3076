"""The agent's reasoning (proposals, streamed tokens, reflections) and the log of events and errors."""
from __future__ import annotations

from rich.markdown import Markdown
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import RichLog, Static

MAX_ENTRIES = 40


class ReasoningView(VerticalScroll):
    """Markdown of the latest proposals and reflections, and below them the LLM's answer as it streams.

    Tokens (``stream``) arrive tagged with (purpose, step, model); they show as plain text under a
    heading that says which call they belong to. When the proposal or reflection they make up arrives
    (``add``), it replaces the raw stream; a stream that never becomes one (an unreadable answer) is
    kept as it was once the next call starts streaming.
    """

    DEFAULT_CSS = """
    ReasoningView { height: 1fr; border: round $primary; }
    ReasoningView Static { height: auto; }
    ReasoningView #reasoning-stream { color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[str] = []
        self.streaming = ""
        self.stream_key: tuple | None = None
        self.border_title = "reasoning"

    def compose(self):
        yield Static("", id="reasoning-text")
        yield Static("", id="reasoning-stream")

    def on_mount(self) -> None:
        self._show_entries()

    def add(self, markdown: str) -> None:
        """A finished proposal or reflection (it replaces the stream it was made of)."""
        self.streaming, self.stream_key = "", None
        self.entries = (self.entries + [markdown])[-MAX_ENTRIES:]
        self._show_entries()
        self._show_stream()

    def stream(self, token: str, key: tuple | None = None) -> None:
        """A piece of the answer of the call ``key`` (purpose, step, model)."""
        if self.streaming and key != self.stream_key:  # an earlier answer that became nothing: keep it
            self.entries = (self.entries + [f"```text\n{self.streaming}\n```"])[-MAX_ENTRIES:]
            self.streaming = ""
            self._show_entries()
        self.stream_key = key
        self.streaming += token
        self._show_stream()

    def _show_entries(self) -> None:
        text = "\n\n".join(self.entries) or "_waiting for the first proposal..._"
        self.query_one("#reasoning-text", Static).update(Markdown(text))
        self.scroll_end(animate=False)

    def _show_stream(self) -> None:
        shown = Text()
        if self.streaming:
            purpose, step, model = (tuple(self.stream_key or ()) + (None, None, None))[:3]
            heading = " ".join(str(p) for p in (purpose or "answer", f"step {step}" if step is not None else None, model) if p)
            shown.append(f"streaming ({heading})\n", style="bold")
            shown.append(self.streaming)
        self.query_one("#reasoning-stream", Static).update(shown)
        self.scroll_end(animate=False)


class EventLog(RichLog):
    DEFAULT_CSS = "EventLog { height: 7; border: round $secondary; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=True, markup=True, **kwargs)
        self.border_title = "events"
