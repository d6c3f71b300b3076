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


@pytest.mark.parametrize("schedule,warmup_ratio", [("cosine", 0.1), ("cosine", 0.0), ("constant", 0.25), ("constant", 0.0)])
def test_lr_schedule_is_hf_trainers(schedule, warmup_ratio) -> None:
    """The screen's schedule multiplies the learning rate exactly as HF Trainer's `lr_scheduler_type`
    (transformers' get_*_schedule_with_warmup, warm-up steps = ceil(warmup_ratio * steps))."""
    import math

    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    from lossforge.trainer.proxy.screen import lr_factor

    steps = 37
    warmup = math.ceil(warmup_ratio * steps)
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    if schedule == "cosine":
        reference = get_cosine_schedule_with_warmup(optimiser, warmup, steps)
    else:
        reference = get_constant_schedule_with_warmup(optimiser, warmup)
    for step in range(steps):
        assert lr_factor(step, steps, schedule, warmup_ratio) == pytest.approx(optimiser.param_groups[0]["lr"], abs=1e-12)
        optimiser.step()
        reference.step()


def test_the_default_schedule_is_constant_without_warmup_and_cosine_differs(task, tiny_proxy) -> None:
    """The default equals its explicit form (a factor of exactly 1 at every step: see the parametrised test
    above), and a cosine screen trains differently."""
    from lossforge.settings.proxy import apply_overrides

    default = screen(LIBRARY["dpo"], task, tiny_proxy.screen)
    explicit = screen(LIBRARY["dpo"], task, apply_overrides(tiny_proxy.screen, {"lr_schedule": "constant", "warmup_ratio": 0.0}))
    cosine = screen(LIBRARY["dpo"], task, apply_overrides(tiny_proxy.screen, {"lr_schedule": "cosine", "warmup_ratio": 0.1}))
    assert [p.kl for p in default.path] == [p.kl for p in explicit.path]
    assert [p.kl for p in cosine.path] != [p.kl for p in default.path]


def test_without_the_final_accuracy_pass_the_fitness_and_path_are_the_same(task, tiny_proxy) -> None:
    from lossforge.settings.proxy import apply_overrides

    full = screen(LIBRARY["dpo"], task, tiny_proxy.screen)
    lean = screen(LIBRARY["dpo"], task, apply_overrides(tiny_proxy.screen, {"final_accuracy": False}))
    assert full.preference_accuracy is not None and full.margin_std is not None
    assert lean.preference_accuracy is None and lean.margin_mean is None and lean.margin_std is None
    assert (lean.fitness, lean.fitness_stderr, lean.path) == (full.fitness, full.fitness_stderr, full.path)


def test_an_unknown_schedule_is_refused() -> None:
    from lossforge.trainer.proxy.screen import lr_factor

    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        lr_factor(0, 10, "linear", 0.0)
