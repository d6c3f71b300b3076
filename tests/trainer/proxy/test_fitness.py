"""The fitness reading: a frontier fitted to the path and read at the KL budget, its noise floor, the win rule."""
from __future__ import annotations

import math

import pytest

from lossforge.trainer.proxy.fitness import (
    Z_WIN,
    fit_frontier,
    frontier_reading,
    is_win,
    noise_floor,
    sampling_stderr,
)


def _frontier(kl: float) -> float:
    """A concave frontier of the Gao et al. form: 1.2 sqrt(kl) - 0.2 kl."""
    return 1.2 * math.sqrt(kl) - 0.2 * kl


def test_the_fit_recovers_a_frontier_of_its_own_form() -> None:
    path = [(kl, _frontier(kl)) for kl in (0.1, 0.3, 0.6, 1.0, 1.5)]
    fit = fit_frontier(path, kl_budget=1.0)
    assert fit.a == pytest.approx(1.2) and fit.b == pytest.approx(-0.2)
    assert fit.rmse == pytest.approx(0.0, abs=1e-9)
    assert frontier_reading(path, kl_budget=1.0) == pytest.approx(_frontier(1.0))


@pytest.mark.parametrize("speed", [0.5, 0.7, 1.0, 1.6])
def test_the_same_frontier_walked_at_any_speed_reads_the_same(speed: float) -> None:
    # checkpoints at evenly spaced steps; a slower loss covers less KL per step, so its checkpoints fall
    # elsewhere on the same curve: the old chord reading (max over checkpoints) differed by ~0.03 here
    kls = [speed * 2.4 * (i / 8) ** 1.3 for i in range(1, 9)]
    path = [(kl, _frontier(kl)) for kl in kls]
    assert max(kls) >= 1.0
    assert frontier_reading(path, kl_budget=1.0) == pytest.approx(_frontier(1.0), abs=1e-9)


def test_a_loss_that_never_reaches_the_budget_is_read_where_it_stopped() -> None:
    path = [(kl, _frontier(kl)) for kl in (0.05, 0.1, 0.2, 0.3)]
    assert frontier_reading(path, kl_budget=1.0) == pytest.approx(_frontier(0.3))


def test_harmful_and_idle_paths() -> None:
    assert frontier_reading([(0.1, -0.2), (0.3, -0.5)], kl_budget=1.0) < 0
    assert frontier_reading([(0.0, 0.0), (0.0, 0.0)], kl_budget=1.0) == 0.0
    with pytest.raises(ValueError):
        frontier_reading([], kl_budget=1.0)


def test_one_distinct_kl_fits_a_sqrt_curve_through_it() -> None:
    assert frontier_reading([(4.0, 2.0)], kl_budget=1.0) == pytest.approx(1.0)  # 1.0 * sqrt(kl)


def test_sampling_stderr_is_deterministic_and_scales_with_the_noise() -> None:
    path = [(kl, _frontier(kl)) for kl in (0.2, 0.5, 0.9, 1.4)]
    small = sampling_stderr(path, [(0.005, 0.01)] * 4, kl_budget=1.0, seed=3)
    large = sampling_stderr(path, [(0.02, 0.04)] * 4, kl_budget=1.0, seed=3)
    assert small == sampling_stderr(path, [(0.005, 0.01)] * 4, kl_budget=1.0, seed=3)
    assert 0 < small < large
    assert large == pytest.approx(4 * small, rel=0.35)
    with pytest.raises(ValueError):
        sampling_stderr(path, [(0.0, 0.0)], kl_budget=1.0)


def test_a_win_needs_more_than_the_noise_floor() -> None:
    assert noise_floor(0.03, 0.04) == pytest.approx(Z_WIN * 0.05)
    assert not is_win(1.05, 0.03, 1.0, 0.04)  # +0.05 < 0.10
    assert is_win(1.11, 0.03, 1.0, 0.04)
    assert is_win(1.01, None, 1.0, None)  # no error known: any positive difference
