"""The fitness measures the loss, not the speed it is trained at: DPO with the learning rate times 0.7 walks
the same reward-KL frontier more slowly and must read the same fitness (issue 13; before, +0.033).

On the default world and screen (two world seeds, built once into the session's cache: about a minute).
"""
from __future__ import annotations

import statistics

import pytest

from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.settings.proxy import ProxyConfig, apply_overrides
from lossforge.trainer.proxy.screen import screen

pytestmark = pytest.mark.slow


def _fitness(config: ProxyConfig, task, loss: str, lr_factor: float) -> float:
    """The search's fitness (the worst reading over the [proxy.fitness] settings) at lr times `lr_factor`."""
    readings = []
    for setting in config.fitness.settings(config.screen):
        result = screen(LIBRARY[loss], task, apply_overrides(setting, {"lr": setting.lr * lr_factor}))
        assert result.fitness is not None, result.degenerate
        readings.append(result.fitness)
    return config.fitness.combine(readings)


def test_dpo_trained_at_0_7_times_the_learning_rate_reads_the_same_fitness(cache_dir) -> None:
    config = ProxyConfig()
    differences = []
    for seed in (0, 1):
        task = load_task(config.world, seed, cache_dir)
        differences.append(_fitness(config, task, "dpo", 0.7) - _fitness(config, task, "dpo", 1.0))
    assert abs(statistics.fmean(differences)) <= 0.01, differences
