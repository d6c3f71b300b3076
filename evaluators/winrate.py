"""Pairwise verdicts -> a win rate against a baseline, with a seeded bootstrap confidence interval.

The judge's verdict label is read as Arena-Hard-Auto reads it (2025 code: lmarena/arena-hard-auto,
gen_judgment.py ``get_score`` with ``regex_patterns`` from config/arena-hard-v2.0.yaml, scored by
show_result.py ``load_judgments``): ``verdict_label(text)`` upper-cases the text, finds every
``[[label]]``; only if there is none, every single-bracket ``[label]``; and takes the *last* one found
(a judge that restates the label list and then gives its verdict is read by its verdict). Labels are
upstream's ten: ``A>>B A>B A=B B>A B>>A`` and the mirrored ``A<<B A<B B=A B<<A B<A``, normalised to the
first five (``A<B`` is ``B>A``). Spaces inside the brackets are not read (``[[A > B]]`` is no label,
as upstream). One departure: where upstream's last match is not one of the ten (``[[A]]``,
``[[A>B>A]]``), show_result.py stops with a ``KeyError``; here the verdict is None (invalid, asked again
next run).

Each question is judged twice, once with the model's answer in position A and once in position B, so a
judge's preference for a position cancels out. A verdict is turned into the model's outcome for that
game, and outcomes are counted with weights: a strong win (``>>``) counts ``strong_weight`` wins (3, as
Arena-Hard-Auto does), a win 1, a tie 1 tie, a loss 1, a strong loss ``strong_weight`` losses. Then

    win_rate = (wins + ties / 2) / (wins + ties + losses)

which is also the Bradley-Terry probability that the model beats the baseline when these two are the
only players, and the mean of show_result.py's per-battle scores (``label_to_score`` with ``weight=3``).
As there, a question counts only when both of its games have a verdict (show_result.py drops a
question with a null game); ``llm_judge.PairwiseJudge`` applies this.

The interval resamples *questions* (both games of a question travel together): with
``rng = numpy.random.default_rng(seed)`` it draws ``idx = rng.integers(0, n, size=(rounds, n))`` once,
computes the win rate of every row, and returns ``numpy.percentile`` (linear interpolation) at
``(1 - confidence) / 2`` and ``(1 + confidence) / 2``. Same inputs and seed, same interval.
"""
from __future__ import annotations

import re
from typing import Literal, Sequence

import numpy as np

__all__ = ["LABEL_PATTERNS", "OUTCOMES", "bootstrap_interval", "outcome", "question_counts", "verdict_label", "win_rate"]

Position = Literal["A", "B"]
OUTCOMES = ("strong_win", "win", "tie", "loss", "strong_loss")
_FROM_A = {"A>>B": "strong_win", "A>B": "win", "A=B": "tie", "B>A": "loss", "B>>A": "strong_loss"}
_FROM_B = {"A>>B": "strong_loss", "A>B": "loss", "A=B": "tie", "B>A": "win", "B>>A": "strong_win"}

#: Arena-Hard-Auto's verdict patterns, tried in this order (config/arena-hard-v2.0.yaml ``regex_patterns``).
LABEL_PATTERNS = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))
#: The ten labels show_result.py scores, each as the verdict it means from A's side.
_LABELS = {
    "A>>B": "A>>B", "A>B": "A>B", "A=B": "A=B", "B>A": "B>A", "B>>A": "B>>A",
    "B<<A": "A>>B", "B<A": "A>B", "B=A": "A=B", "A<B": "B>A", "A<<B": "B>>A",
}


def verdict_label(text: str | None) -> str | None:
    """The judge's verdict in ``text`` as one of ``A>>B A>B A=B B>A B>>A``, read by Arena-Hard-Auto's rules
    (see the module docstring: upper case, ``[[...]]`` before ``[...]``, the last label counts); None when
    there is no label or the last one is not one of upstream's ten."""
    upper = (text or "").upper()
    for pattern in LABEL_PATTERNS:
        found = [m for m in pattern.findall(upper) if m != ""]
        if found:
            return _LABELS.get(found[-1].strip("\n"))
    return None


def outcome(verdict: str | None, model_position: Position) -> str | None:
    """The model's outcome of one game, or None for a missing verdict."""
    if verdict is None:
        return None
    return (_FROM_A if model_position == "A" else _FROM_B)[verdict]


def question_counts(outcomes: Sequence[str | None], strong_weight: float = 3.0) -> tuple[float, float, float]:
    """Weighted (wins, ties, losses) of one question's games; missing verdicts count for nothing."""
    wins = ties = losses = 0.0
    for item in outcomes:
        if item == "strong_win":
            wins += strong_weight
        elif item == "win":
            wins += 1
        elif item == "tie":
            ties += 1
        elif item == "loss":
            losses += 1
        elif item == "strong_loss":
            losses += strong_weight
    return wins, ties, losses


def win_rate(wins: float, ties: float, losses: float) -> float:
    """(wins + ties / 2) / all games; NaN when there are no games."""
    total = wins + ties + losses
    return float("nan") if total == 0 else (wins + 0.5 * ties) / total


def bootstrap_interval(
    counts: Sequence[tuple[float, float, float]], *, rounds: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """The bootstrap interval of the win rate over questions (see the module docstring)."""
    if not counts:
        return float("nan"), float("nan")
    table = np.asarray(counts, dtype=float)  # (n, 3)
    n = len(table)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(rounds, n))
    sums = table[idx].sum(axis=1)  # (rounds, 3)
    total = sums.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (sums[:, 0] + 0.5 * sums[:, 1]) / total
    rates = rates[np.isfinite(rates)]
    if rates.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(rates, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return float(low), float(high)
