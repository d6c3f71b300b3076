"""Screening a loss: determinism, the path and its noise, and degenerate losses (the fitness reading: test_fitness.py)."""
from __future__ import annotations

import pytest
import torch

from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.trainer.proxy.leaderboard import anti_dpo
from lossforge.trainer.proxy.screen import screen


@pytest.fixture(scope="module")
def task(tiny_proxy, cache_dir):
    return load_task(tiny_proxy.world, 11, cache_dir)


def test_screen_is_deterministic(task, tiny_proxy) -> None:
    a = screen(LIBRARY["dpo"], task, tiny_proxy.screen)
    b = screen(LIBRARY["dpo"], task, tiny_proxy.screen)
    assert a.fitness == b.fitness
    assert [p.kl for p in a.path] == [p.kl for p in b.path]


def test_dpo_gains_reward_and_anti_dpo_loses_it(task, tiny_proxy) -> None:
    dpo = screen(LIBRARY["dpo"], task, tiny_proxy.screen)
    wrong = screen(anti_dpo, task, tiny_proxy.screen)
    assert dpo.fitness is not None and wrong.fitness is not None
    assert dpo.fitness > 0 > wrong.fitness
    assert dpo.preference_accuracy > 0.5 > wrong.preference_accuracy
    assert all(p.kl >= 0 for p in dpo.path)


def test_non_finite_loss_is_degenerate_not_a_score(task, tiny_proxy) -> None:
    def explodes(pc, pr, rc, rr, beta):
        return torch.exp(1e4 * (pc - rc)) - (pr - rr)

    result = screen(explodes, task, tiny_proxy.screen)
    assert result.fitness is None
    assert "non-finite" in result.degenerate


def test_wrong_shape_is_degenerate(task, tiny_proxy) -> None:
    def scalar(pc, pr, rc, rr, beta):
        return -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()

    result = screen(scalar, task, tiny_proxy.screen)
    assert result.fitness is None and "expected" in result.degenerate
