"""The candidates in flight, on one line: what each walk of the search is doing right now.

``flight_text(entries, width)`` draws ``rundir.in_flight`` entries (``#12 smooth_sigmoid screening │
step 14 proposing │ ...``) fitted to ``width`` cells; ``InFlightBar`` shows it and hides itself while
nothing is in flight, so a finished or a one-at-a-time idle run keeps the layout it had.
"""
from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from lossforge.rundir.in_flight import InFlight, Stage

__all__ = ["InFlightBar", "flight_text"]

STAGE_STYLES = {Stage.PROPOSING: "magenta", Stage.REPAIRING: "magenta", Stage.SCREENING: "cyan",
                Stage.TRAINING: "bold cyan", Stage.CHECKING: "yellow", Stage.DEDUPLICATING: "yellow"}


def flight_text(entries: list[InFlight], width: int) -> Text:
    """``in flight N: label │ label ...`` truncated with an ellipsis to ``width`` cells ('' when none)."""
    if not entries:
        return Text("")
    line = Text(f"in flight {len(entries)}: ", style="bold")
    for i, entry in enumerate(entries):
        if i:
            line.append(" │ ", style="dim")
        who = f"#{entry.candidate_id} {entry.name}" if entry.candidate_id is not None else f"step {entry.step}"
        line.append(who + " ")
        job = f" (job {entry.job_status})" if entry.stage == Stage.TRAINING and entry.job_status else ""
        line.append(f"{entry.stage}{job}", style=STAGE_STYLES.get(entry.stage, ""))
    line.truncate(max(0, width), overflow="ellipsis")
    return line


class InFlightBar(Widget):
    """One line: the candidates in flight and their stages; hidden while there are none."""

    DEFAULT_CSS = "InFlightBar { height: 1; width: 1fr; padding: 0 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[InFlight] = []

    def on_mount(self) -> None:
        self.display = False

    def show(self, entries: list[InFlight]) -> None:
        self.entries = list(entries)
        self.display = bool(self.entries)
        self.refresh()

    def render(self) -> Text:
        return flight_text(self.entries, self.content_region.width or 78)
