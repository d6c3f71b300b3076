"""What the budget gauges show: one plain model, fed from events, the archive's meta table and the config.

``BudgetFigures`` holds, for each budget of a run, what is spent and its limit: evaluated candidates
against this invocation's target, LLM dollars, tokens and calls, and GPU-hours. The app updates it from

* ``run_started`` / ``run_resumed`` events (the target) and the archive (evaluated candidates);
* ``llm_call`` events (their ``budget`` summary: spent and limits, as the proposer's ``Budget`` says);
* the archive's meta ``llm_budget`` (the spending saved by the run, so a resumed or attached view shows
  what was spent before any new call) with the limits of the run's configuration (``config.json`` in
  the run directory when attached);
* GPU-hours: the training wall time of the train stage's jobs (each job has one GPU), summed from the
  archive's ``train`` timings; ``budget`` events may also report ``gpu_hours`` / ``max_gpu_hours``. The
  configuration has no GPU-hour limit yet, so this gauge shows what was spent, without a bar.

Nothing here touches Textual, so it is tested without an app.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BudgetFigures", "Meter", "format_value"]


@dataclass
class Meter:
    """One budget: what is spent (None: nothing reported) and the limit (None: no limit)."""

    spent: float | None = None
    limit: float | None = None

    @property
    def fraction(self) -> float | None:
        """Spent over limit, clamped to [0, 1]; None when there is no limit or nothing is reported."""
        if self.spent is None or not self.limit:
            return None
        return max(0.0, min(1.0, self.spent / self.limit))

    @property
    def reached(self) -> bool:
        return self.spent is not None and self.limit is not None and self.spent >= self.limit


def _compact(n: float) -> str:
    n = float(n)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def format_value(kind: str, value: float | None) -> str:
    """A spent amount or a limit as the gauges print it ('' for None)."""
    if value is None:
        return ""
    if kind == "usd":
        return f"${value:.2f}" if value >= 1 else f"${value:.3f}"
    if kind == "gpu_hours":
        return f"{value:.1f}h" if value >= 10 else f"{value:.2f}h"
    return _compact(value)


@dataclass
class BudgetFigures:
    """Every budget of one run (see the module docstring)."""

    generations: Meter = field(default_factory=Meter)
    usd: Meter = field(default_factory=Meter)
    tokens: Meter = field(default_factory=Meter)
    calls: Meter = field(default_factory=Meter)
    gpu_hours: Meter = field(default_factory=Meter)
    exhausted: str | None = None

    def set_generations(self, done: int, target: int | None) -> None:
        self.generations = Meter(float(done), float(target) if target else None)

    def set_llm_limits(self, limits: dict[str, Any] | None) -> None:
        """The LLM limits of the run's configuration (``[proposer.llm.budget]``)."""
        limits = limits or {}
        self.usd.limit = limits.get("max_usd")
        self.tokens.limit = limits.get("max_tokens")
        self.calls.limit = limits.get("max_calls")

    def set_llm_spent(self, state: dict[str, Any] | None) -> None:
        """The spending saved in the archive's meta (``BudgetState``: calls, tokens, usd)."""
        if not state:
            return
        self.usd.spent = float(state.get("usd", 0.0))
        tokens = state.get("tokens")
        if tokens is None:
            tokens = int(state.get("prompt_tokens", 0)) + int(state.get("completion_tokens", 0))
        self.tokens.spent = float(tokens)
        self.calls.spent = float(state.get("calls", 0))

    def from_llm_summary(self, summary: dict[str, Any] | None) -> None:
        """An ``llm_call`` event's ``budget`` (``Budget.summary()``): spending and limits together."""
        if not summary:
            return
        self.set_llm_spent(summary)
        self.set_llm_limits(summary)
        self.exhausted = summary.get("exhausted")

    def set_training_seconds(self, seconds: float) -> None:
        """GPU-hours from the training jobs' wall time (one GPU a job); nothing trained: not reported."""
        if seconds > 0:
            self.gpu_hours.spent = seconds / 3600

    def from_budget_event(self, event: dict[str, Any]) -> None:
        """A ``budget`` event: any of gpu_hours, max_gpu_hours (and the LLM figures under ``llm``)."""
        if "gpu_hours" in event:
            self.gpu_hours.spent = event["gpu_hours"]
        if "max_gpu_hours" in event:
            self.gpu_hours.limit = event["max_gpu_hours"]
        if isinstance(event.get("llm"), dict):
            self.from_llm_summary(event["llm"])

    def rows(self) -> list[tuple[str, str, Meter]]:
        """(label, kind, meter) for each gauge, in display order."""
        return [
            ("gen", "generations", self.generations),
            ("USD", "usd", self.usd),
            ("tokens", "tokens", self.tokens),
            ("calls", "calls", self.calls),
            ("GPU-h", "gpu_hours", self.gpu_hours),
        ]
