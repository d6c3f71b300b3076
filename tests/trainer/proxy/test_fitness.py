"""The fitness reading: the path read at the KL budget, its noise floor, and the one win rule."""
from __future__ import annotations

import math

import pytest

from lossforge.trainer.proxy.fitness import Z_WIN, frontier_reading, is_win, noise_floor, reward_at_kl, sampling_stderr


def _frontier(kl: float) -> float:
    """A concave frontier (the form of Gao et al. 2023): 1.2 sqrt(kl) - 0.2 kl."""
    return 1.2 * math.sqrt(kl) - 0.2 * kl


def test_the_path_is_read_where_it_first_reaches_the_budget() -> None:
    # from (0.5, 0.6) to (1.5, 1.0): at KL 1.0 the gain is 0.8; a later point does not count
    assert frontier_reading([(0.5, 0.6), (1.5, 1.0), (0.9, 5.0)], kl_budget=1.0) == pytest.approx(0.8)
    # the first checkpoint already beyond: read on the line from the reference (0, 0)
    assert frontier_reading([(4.0, 2.0)], kl_budget=1.0) == pytest.approx(0.5)
    assert reward_at_kl([(0.2, 0.3)], 1.0) is None


@pytest.mark.parametrize("speed", [0.5, 0.7, 1.0, 1.6])
def test_the_same_frontier_walked_at_any_speed_reads_the_same_within_the_chord_error(speed: float) -> None:
    # 8 checkpoints at evenly spaced steps; a slower loss covers less KL per step, so its checkpoints fall
    # elsewhere on the same curve. With the old 4 checkpoints and a max over them, readings differed by 0.03.
    kls = [speed * 2.4 * (i / 8) ** 1.3 for i in range(1, 9)]
    path = [(kl, _frontier(kl)) for kl in kls]
    assert frontier_reading(path, kl_budget=1.0) == pytest.approx(_frontier(1.0), abs=0.01)


def test_a_loss_that_never_reaches_the_budget_is_read_where_it_stopped() -> None:
    path = [(kl, _frontier(kl)) for kl in (0.05, 0.1, 0.2, 0.3)]
    assert frontier_reading(path, kl_budget=1.0) == pytest.approx(_frontier(0.3))


def test_harmful_and_empty_paths() -> None:
    assert frontier_reading([(0.1, -0.2), (0.3, -0.5)], kl_budget=1.0) == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        frontier_reading([], kl_budget=1.0)


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
