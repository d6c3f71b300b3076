"""The selected candidate: its code (highlighted), its check report and its loss shape against DPO's."""
from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot

from lossforge.rundir.archive import Candidate


def report_text(candidate: Candidate) -> Text:
    text = Text()
    text.append(f"#{candidate.id} {candidate.name}", style="bold")
    text.append(f"  [{candidate.status}]")
    if candidate.fitness is not None:
        text.append(f"  fitness {candidate.fitness:+.4f}")
        if candidate.fitness_stderr is not None:  # the noise floor, read as the search reads it
            text.append(f" +- {candidate.fitness_stderr:.4f}")
    text.append("\n")
    if candidate.thought:
        text.append(candidate.thought.strip() + "\n", style="italic")
    report = candidate.check_report or {}
    for check in report.get("checks", []):
        mark = "ok  " if check.get("passed") else "FAIL"
        text.append(f"{mark} {check.get('name')}", style="green" if check.get("passed") else "bold red")
        if not check.get("passed"):
            text.append(f": {check.get('evidence', '')}  {check.get('hint', '')}")
        text.append("\n")
    if candidate.error:
        text.append(f"error: {candidate.error}\n", style="red")
    if candidate.reflection:
        text.append(f"reflection: {candidate.reflection}\n", style="dim")
    return text


class LossPlot(PlotextPlot):
    """f(rho) and its derivative for the candidate, next to DPO's (dashed in colour terminals)."""

    DEFAULT_CSS = "LossPlot { height: 12; }"

    def show(self, name: str, curve: dict | None, dpo: dict | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{name}: f(rho) and df/drho vs DPO")
        if dpo:
            plt.plot(dpo["rho"], dpo["value"], label="DPO f")
            plt.plot(dpo["rho"], dpo["derivative"], label="DPO f'")
        if curve:
            finite = [(r, v, d) for r, v, d in zip(curve["rho"], curve["value"], curve["derivative"]) if v == v and d == d]
            if finite:
                rhos, values, derivatives = zip(*finite)
                plt.plot(list(rhos), [max(min(v, 20.0), -20.0) for v in values], label=f"{name} f")
                plt.plot(list(rhos), [max(min(d, 20.0), -20.0) for d in derivatives], label=f"{name} f'")
        plt.xlabel("rho")
        self.refresh()


class CandidateDetail(Vertical):
    DEFAULT_CSS = """
    CandidateDetail { height: 1fr; }
    CandidateDetail #detail-report { height: auto; }
    CandidateDetail #detail-code { height: auto; }
    CandidateDetail VerticalScroll { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield LossPlot(id="loss-plot")
        with VerticalScroll():
            yield Static("Select a candidate (arrow keys).", id="detail-report")
            yield Static("", id="detail-code")

    def show(self, candidate: Candidate) -> None:
        self.query_one("#detail-report", Static).update(report_text(candidate))
        self.query_one("#detail-code", Static).update(
            Syntax(candidate.code or "# no code", "python", theme="ansi_dark", line_numbers=False, word_wrap=True)
        )
