"""Best fitness over evaluated candidates (a chart), and the budgets panel: gauges and the screen in progress."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar
from textual_plotext import PlotextPlot

from lossforge.rundir.archive import Candidate
from lossforge.tui.budget import BudgetFigures
from lossforge.tui.widgets.gauges import BudgetGauges


class BestChart(PlotextPlot):
    DEFAULT_CSS = "BestChart { height: 1fr; min-height: 6; }"

    def show(self, candidates: list[Candidate]) -> None:
        evaluated = sorted((c for c in candidates if c.generation is not None), key=lambda c: c.generation)
        xs, ys, best = [], [], None
        for c in evaluated:
            if c.fitness is not None:
                best = c.fitness if best is None else max(best, c.fitness)
            if best is not None:
                xs.append(c.generation)
                ys.append(best)
        plt = self.plt
        plt.clear_data()
        plt.title("best fitness")
        if xs:
            plt.plot(xs, ys)
        self.refresh()


class Budgets(Vertical):
    """The budgets as gauges (generations, USD, tokens, calls, GPU-hours), then what the search is doing."""

    DEFAULT_CSS = """
    Budgets { height: auto; border: round $secondary; padding: 0 1; }
    Budgets ProgressBar { width: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "budgets"

    def compose(self) -> ComposeResult:
        yield BudgetGauges(id="gauges")
        yield Label("", id="screen-progress")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="screen-bar")

    def on_mount(self) -> None:
        self._screen_started: float | None = None
        self._typical: float | None = None
        self.query_one("#screen-bar", ProgressBar).display = False
        self.set_interval(0.5, self._tick)

    def start_screen(self, typical_seconds: float | None) -> None:
        """A screen began: show elapsed time against the typical screen time of this run."""
        import time

        self._screen_started, self._typical = time.monotonic(), typical_seconds
        bar = self.query_one("#screen-bar", ProgressBar)
        bar.update(total=typical_seconds, progress=0)
        bar.display = True

    def end_screen(self) -> None:
        self._screen_started = None
        self.query_one("#screen-bar", ProgressBar).display = False

    def _tick(self) -> None:
        if self._screen_started is None:
            return
        import time

        elapsed = time.monotonic() - self._screen_started
        bar = self.query_one("#screen-bar", ProgressBar)
        if self._typical:
            bar.update(progress=min(elapsed, self._typical * 0.99))
        typical = f" (typically {self._typical:.0f}s)" if self._typical else ""
        self.query_one("#screen-progress", Label).update(f"screening {elapsed:.0f}s{typical}")

    def show(self, figures: BudgetFigures) -> None:
        self.query_one(BudgetGauges).show(figures)

    def set_activity(self, text: str) -> None:
        self.query_one("#screen-progress", Label).update(text)
