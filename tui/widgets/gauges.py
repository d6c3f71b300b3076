"""Budget gauges: one line per budget (label, bar, spent/limit), and a one-line strip for narrow terminals.

The bars are drawn with different glyphs for the spent part (``█``), the part left (``░``), a budget
without a limit (``·``) and one nothing reports (``─``), so they read the same without colour
(``NO_COLOR``) and in the light theme; colour only adds emphasis (red once a spending limit is reached;
the generations gauge reaching its target is the run doing its job, not an alarm).
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from lossforge.tui.budget import BudgetFigures, Meter, format_value

FULL, EMPTY, UNBOUNDED, UNKNOWN = "█", "░", "·", "─"


def value_text(kind: str, meter: Meter) -> str:
    """'spent/limit', 'spent' without a limit, 'n/a' when nothing is reported."""
    if meter.spent is None and meter.limit is None:
        return "n/a"
    spent = format_value(kind, meter.spent if meter.spent is not None else 0.0)
    return f"{spent}/{format_value(kind, meter.limit)}" if meter.limit is not None else spent


def alarming(kind: str, meter: Meter) -> bool:
    """A spending limit reached (red); generations reaching the target is not one."""
    return meter.reached and kind != "generations"


def bar_text(meter: Meter, width: int, alarm: bool = False) -> Text:
    """A bar of ``width`` cells for one meter (red when ``alarm``)."""
    width = max(0, width)
    if meter.spent is None and meter.limit is None:
        return Text(UNKNOWN * width, style="dim")
    fraction = meter.fraction
    if fraction is None:
        return Text(UNBOUNDED * width, style="dim")
    filled = round(fraction * width)
    if 0 < fraction < 1:
        filled = min(max(filled, 1), width - 1)  # something spent shows; not full until reached
    bar = Text(FULL * filled, style="bold red" if alarm else "green")
    bar.append(EMPTY * (width - filled), style="dim")
    return bar


def gauge_line(label: str, kind: str, meter: Meter, width: int, label_width: int = 7) -> Text:
    """``label  ████░░░░  spent/limit`` fitted to ``width`` cells."""
    value, alarm = value_text(kind, meter), alarming(kind, meter)
    line = Text(f"{label:<{label_width}}", style="bold red" if alarm else "bold")
    bar_width = width - label_width - len(value) - 1
    if bar_width >= 3:
        line.append_text(bar_text(meter, bar_width, alarm))
        line.append(" ")
    line.append(value, style="bold red" if alarm else "")
    line.truncate(width)
    return line


class Gauge(Widget):
    """One budget as a one-line gauge."""

    DEFAULT_CSS = "Gauge { height: 1; width: 1fr; }"

    def __init__(self, label: str, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label, self.kind, self.meter = label, kind, Meter()

    def show(self, meter: Meter) -> None:
        self.meter = Meter(meter.spent, meter.limit)
        self.refresh()

    def render(self) -> Text:
        return gauge_line(self.label, self.kind, self.meter, self.content_region.width or 30)


class BudgetGauges(Vertical):
    """Every budget, one gauge each (generations, USD, tokens, calls, GPU-hours)."""

    DEFAULT_CSS = "BudgetGauges { height: auto; }"

    def compose(self) -> ComposeResult:
        for label, kind, _ in BudgetFigures().rows():
            yield Gauge(label, kind, id=f"gauge-{kind}")

    def show(self, figures: BudgetFigures) -> None:
        for _, kind, meter in figures.rows():
            self.query_one(f"#gauge-{kind}", Gauge).show(meter)


def strip_text(figures: BudgetFigures, width: int) -> Text:
    """The budgets that report something, on one line: short bars, spent/limit, separated by ``│``."""
    parts: list[Text] = []
    for label, kind, meter in figures.rows():
        if kind == "calls" or (kind != "generations" and meter.spent is None and meter.limit is None):
            continue
        alarm = alarming(kind, meter)
        part = Text(f"{label} ", style="bold red" if alarm else "bold")
        part.append_text(bar_text(meter, 6, alarm))
        part.append(" " + value_text(kind, meter), style="bold red" if alarm else "")
        parts.append(part)
    line = Text(" │ ", style="dim").join(parts)
    if figures.exhausted:
        line.append("  budget spent", style="bold red")
    line.truncate(width, overflow="ellipsis")
    return line


class BudgetStrip(Widget):
    """The budgets on one line, for terminals too narrow for the gauges panel."""

    DEFAULT_CSS = "BudgetStrip { height: 1; width: 1fr; padding: 0 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.figures = BudgetFigures()

    def show(self, figures: BudgetFigures) -> None:
        self.figures = figures
        self.refresh()

    def render(self) -> Text:
        return strip_text(self.figures, self.content_region.width or 78)
