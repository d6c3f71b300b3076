"""Reading a loss's fitness from its reward-KL path: the reward gain at a matched KL, with its noise floor.

A screen trains a policy and measures, at checkpoints along training, the KL to the reference and the
reward gain of its samples. Those points trace the loss's *frontier*: the reward it buys for each amount
of KL. How fast a loss walks along its frontier (learning rate, steps, its own gradient scale) is not a
property worth rewarding, so the fitness is read at a fixed KL, on the path itself: the checkpoints are
dense (8 by default) and joined by straight lines from the reference (0, 0), and the path is read where
it first reaches the KL budget. The old reading took the best checkpoint within the budget from 4
checkpoints, so a loss scored for where its checkpoints happened to fall: a chord between two distant
checkpoints runs under the concave frontier (docs/BENCHMARKS.md keeps those numbers as the "before").

What it guarantees
------------------
* ``frontier_reading(path, kl_budget)`` is the path's reward gain where it first reaches ``kl_budget``
  (linear between the two checkpoints around it); a loss that never reaches the budget is read at its
  last checkpoint (no extrapolation: it did not buy that reward). Two paths on the same frontier that
  both reach the budget read the same up to the chord error between neighbouring checkpoints.
* ``sampling_stderr`` is the standard error of that reading due to evaluation sampling alone (a seeded
  parametric bootstrap over the checkpoints' own standard errors, so deterministic). Across candidates
  the sampling uses common random numbers, so a *difference* between two candidates is noisier by less
  than the two errors combined: ``noise_floor`` is conservative.
* ``is_win(a, se_a, b, se_b)`` is the one rule for "a beats b" used by the reflections, the prompts, the
  report and the benches: the difference must exceed ``Z_WIN`` combined standard errors.

What it does not guarantee
--------------------------
* Equality for paths with a transient: a loss whose early path dips (DiscoPOP's gate pushes margins the
  wrong way near 0) and recovers is read where it is at the budget, so a slower walk can read differently.
"""
from __future__ import annotations

import math
import random

__all__ = ["Z_WIN", "compare", "frontier_reading", "is_win", "noise_floor", "reward_at_kl", "sampling_stderr"]

#: Combined standard errors a difference must exceed to count as a win (about a 5% two-sided test).
Z_WIN = 2.0
_BOOTSTRAP = 200  # draws of the sampling-noise bootstrap


def reward_at_kl(path: list[tuple[float, float]], kl: float) -> float | None:
    """The reward gain where `path` = [(kl, gain), ...] (from the reference (0, 0)) first reaches `kl`
    nats, linear between checkpoints; None when it never does."""
    previous_kl, previous_gain = 0.0, 0.0
    for point_kl, gain in path:
        if point_kl >= kl:
            if point_kl == previous_kl:
                return gain
            return previous_gain + (kl - previous_kl) * (gain - previous_gain) / (point_kl - previous_kl)
        previous_kl, previous_gain = point_kl, gain
    return None


def frontier_reading(path: list[tuple[float, float]], kl_budget: float) -> float:
    """The fitness: the path's reward gain at ``kl_budget`` nats, or at its last checkpoint if it never
    gets there (module docstring). Gain in standard deviations of the reference's reward. Raises
    ValueError for an empty path."""
    if not path:
        raise ValueError("frontier_reading needs at least one checkpoint")
    reading = reward_at_kl(path, kl_budget)
    return path[-1][1] if reading is None else reading


def sampling_stderr(
    path: list[tuple[float, float]], stderrs: list[tuple[float, float]], kl_budget: float, seed: int = 0
) -> float:
    """Standard error of `frontier_reading` from evaluation sampling: a seeded parametric bootstrap.

    `stderrs` holds each checkpoint's (KL standard error, gain standard error): the sample standard
    deviation over its evaluation samples divided by sqrt(n). Each draw perturbs every checkpoint by
    independent Gaussian noise of those sizes and reads the fitness again. Raises ValueError when the
    lengths differ.
    """
    if len(stderrs) != len(path):
        raise ValueError(f"{len(stderrs)} standard errors for {len(path)} checkpoints")
    rng = random.Random(seed)
    readings = []
    for _ in range(_BOOTSTRAP):
        noisy = [(kl + rng.gauss(0.0, se_kl), gain + rng.gauss(0.0, se_gain)) for (kl, gain), (se_kl, se_gain) in zip(path, stderrs)]
        readings.append(frontier_reading(noisy, kl_budget))
    mean = sum(readings) / len(readings)
    return math.sqrt(sum((r - mean) ** 2 for r in readings) / (len(readings) - 1))


def noise_floor(stderr_a: float | None, stderr_b: float | None) -> float:
    """``Z_WIN`` times the combined standard error of a difference of two readings (a missing error: 0)."""
    return Z_WIN * math.sqrt((stderr_a or 0.0) ** 2 + (stderr_b or 0.0) ** 2)


def is_win(value: float, stderr: float | None, other: float, other_stderr: float | None) -> bool:
    """Whether `value` beats `other` beyond the noise floor (the one rule for a reported win)."""
    return value - other > noise_floor(stderr, other_stderr)


def compare(value: float, stderr: float | None, other: float, other_stderr: float | None) -> tuple[str, float]:
    """How `value` stands against `other`: ("win" | "level" | "below", the noise floor used).

    "win" is `is_win`; "level" is a difference within the noise floor either way; "below" the rest.
    """
    floor = noise_floor(stderr, other_stderr)
    if value - other > floor:
        return "win", floor
    return ("level" if abs(value - other) <= floor else "below"), floor
