"""Best fitness over evaluated candidates (a chart) and the budgets as gauges."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar
from textual_plotext import PlotextPlot

from lossforge.agent.archive import Candidate


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
    """Generations done against the target; USD, tokens and GPU-hours appear when a run reports them."""

    DEFAULT_CSS = "Budgets { height: auto; } Budgets ProgressBar { width: 1fr; }"

    def compose(self) -> ComposeResult:
        yield Label("generations", id="budget-label")
        yield ProgressBar(total=None, show_eta=False, id="budget-generations")
        yield Label("", id="budget-extra")
        yield Label("", id="screen-progress")

    def set_generations(self, done: int, target: int | None) -> None:
        bar = self.query_one("#budget-generations", ProgressBar)
        bar.update(total=target or None, progress=done)
        self.query_one("#budget-label", Label).update(f"generations {done}/{target if target else '?'}")

    def set_extra(self, text: str) -> None:
        self.query_one("#budget-extra", Label).update(text)

    def set_activity(self, text: str) -> None:
        self.query_one("#screen-progress", Label).update(text)
