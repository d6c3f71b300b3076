"""Reading a loss's fitness from its reward-KL path: the reward gain of its frontier at a matched KL.

A screen trains a policy and measures, at checkpoints along training, the KL to the reference and the
reward gain of its samples. Those points lie on the loss's *frontier*: the reward the loss buys for each
amount of KL. How fast a loss walks along its frontier (learning rate, steps, the loss's own gradient
scale) is not a property worth rewarding: a loss that walks slowly is read at the same KL as one that
walks fast. So the fitness is read from a curve fitted to the checkpoints, never from where the
checkpoints happen to fall.

The frontier model is the best-of-n form of Gao, Schulman and Hilton, "Scaling Laws for Reward Model
Overoptimization" (ICML 2023, Eq. 1): ``gain(kl) = a * sqrt(kl) + b * kl``, through the reference
(0, 0), fitted by least squares to the checkpoints with ``kl <= window * kl_budget``. It is concave when
``b < 0`` (diminishing returns, and over-optimisation past its peak) and is linear in (a, b), so the fit
is exact and cheap.

What it guarantees
------------------
* ``frontier_reading(path, kl_budget)`` is the fitted gain at ``min(kl_budget, kl_reached)``, where
  ``kl_reached`` is the largest KL the path reached: a loss that never reaches the budget is read at the
  furthest point it reached (no extrapolation), and one that overshoots is read at the budget. Two
  paths on the same frontier that both reach the budget read the same, whatever their speed. A loss
  whose reward falls again before the budget (over-optimisation) is read where it is at the budget.
* ``sampling_stderr`` is the standard error of that reading due to evaluation sampling alone (a
  parametric bootstrap over the checkpoints' own standard errors, seeded, so deterministic). Across
  candidates the sampling uses common random numbers, so a *difference* between two candidates is
  noisier by less than the two errors combined: the combined error is a conservative noise floor.
* ``is_win(a, se_a, b, se_b)`` is the one rule for "a beats b" used by the archive's notes, the
  reflections, the prompts, the report and the benches: the difference must exceed ``Z_WIN`` combined
  standard errors.

What it does not guarantee
--------------------------
* That the form fits every path: a path that turns back (KL falling late in training) is fitted as it
  is; ``FrontierFit.rmse`` reports how well the curve fits the points used.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["FrontierFit", "Z_WIN", "fit_frontier", "frontier_reading", "is_win", "noise_floor", "sampling_stderr"]

#: Combined standard errors a difference must exceed to count as a win (about a 5% two-sided test).
Z_WIN = 2.0
#: Checkpoints up to this multiple of the KL budget enter the fit (the frontier near the budget decides).
WINDOW = 2.0
_BOOTSTRAP = 200  # draws of the sampling-noise bootstrap


@dataclass(frozen=True)
class FrontierFit:
    """``gain(kl) = a * sqrt(kl) + b * kl``, fitted on ``n_points`` checkpoints up to ``kl_reached``."""

    a: float
    b: float
    kl_reached: float  # the largest KL of the path (nats)
    n_points: int  # checkpoints used by the fit
    rmse: float  # root-mean-square residual of the fit on those checkpoints (reward-gain units)

    def gain(self, kl: float) -> float:
        """The fitted reward gain at `kl` nats."""
        return self.a * math.sqrt(max(kl, 0.0)) + self.b * max(kl, 0.0)


def _points_for_fit(path: list[tuple[float, float]], kl_budget: float) -> list[tuple[float, float]]:
    """The checkpoints inside the window; at least the first two when fewer fall inside it."""
    inside = [(kl, gain) for kl, gain in path if kl <= WINDOW * kl_budget]
    if len(inside) >= 2:
        return inside
    return sorted(path, key=lambda point: point[0])[: max(2, len(inside))]


def fit_frontier(path: list[tuple[float, float]], kl_budget: float) -> FrontierFit:
    """Least-squares fit of the frontier through the reference to the checkpoints `path` = [(kl, gain)].

    KL in nats, gain in standard deviations of the reference's reward. Raises ValueError for an empty
    path. A path whose points carry no KL at all (the policy never moved) fits a = b = 0.
    """
    if not path:
        raise ValueError("fit_frontier needs at least one checkpoint")
    kl_reached = max(max(kl for kl, _ in path), 0.0)
    points = [(max(kl, 0.0), gain) for kl, gain in _points_for_fit(path, kl_budget)]
    # Normal equations of gain = a * s + b * k with s = sqrt(k).
    sss = sum(k for k, _ in points)  # sum of s * s
    ssk = sum(math.sqrt(k) * k for k, _ in points)
    skk = sum(k * k for k, _ in points)
    sy = sum(math.sqrt(k) * g for k, g in points)
    ky = sum(k * g for k, g in points)
    determinant = sss * skk - ssk * ssk
    if sss <= 1e-12:
        a = b = 0.0
    elif abs(determinant) <= 1e-12 * max(sss * skk, 1e-12):  # one distinct KL: a sqrt curve through it
        a, b = sy / sss, 0.0
    else:
        a = (sy * skk - ky * ssk) / determinant
        b = (ky * sss - sy * ssk) / determinant
    residuals = [g - (a * math.sqrt(k) + b * k) for k, g in points]
    rmse = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    return FrontierFit(a=a, b=b, kl_reached=kl_reached, n_points=len(points), rmse=rmse)


def frontier_reading(path: list[tuple[float, float]], kl_budget: float) -> float:
    """The fitness: the fitted reward gain at ``min(kl_budget, kl_reached)`` (module docstring).

    `path` = [(kl, gain), ...] over the trained checkpoints (the reference itself is not one); KL in
    nats, gain in reference reward standard deviations. Raises ValueError for an empty path.
    """
    fit = fit_frontier(path, kl_budget)
    return fit.gain(min(kl_budget, fit.kl_reached))


def sampling_stderr(
    path: list[tuple[float, float]], stderrs: list[tuple[float, float]], kl_budget: float, seed: int = 0
) -> float:
    """Standard error of `frontier_reading` from evaluation sampling: a seeded parametric bootstrap.

    `stderrs` holds each checkpoint's (KL standard error, gain standard error), the sample standard
    deviation over its evaluation samples divided by sqrt(n). Each draw perturbs every checkpoint by
    independent Gaussian noise of those sizes and reads the fitness again.
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
    """``Z_WIN`` times the combined standard error of a difference of two readings (missing errors: 0)."""
    return Z_WIN * math.sqrt((stderr_a or 0.0) ** 2 + (stderr_b or 0.0) ** 2)


def is_win(value: float, stderr: float | None, other: float, other_stderr: float | None) -> bool:
    """Whether `value` beats `other` beyond the noise floor (the one rule for a reported win)."""
    return value - other > noise_floor(stderr, other_stderr)
