"""`tools.core.screen_for_fitness`: the search's fitness over the screen and its variants.

A scripted sandbox stands in for the real one (its `run` returns a reading per beta), so the
aggregation, the lazy skip and the failure rules are checked exactly; the real screens of the same code
path run in tests/agent/test_robust_fitness.py.
"""
from __future__ import annotations

from typing import Any

import pytest

from lossforge.sandbox.protocol import SandboxError
from lossforge.tools.core import screen_for_fitness
from lossforge.settings.proxy import ProxyConfig

CODE = "def f(a, b, c, d, beta):\n    return a - b\n"


class ScriptedSandbox:
    """`run` answers a screen's result from `by_beta` (a float, 'degenerate' or an exception)."""

    def __init__(self, by_beta: dict[float, Any]) -> None:
        self.by_beta = by_beta
        self.betas: list[float] = []

    def run(self, code: str, task: Any, world: dict, screen: dict, seed: int, cache_dir: str, timeout: float) -> dict:
        beta = screen["beta"]
        self.betas.append(beta)
        answer = self.by_beta[beta]
        if isinstance(answer, Exception):
            raise answer
        if answer == "degenerate":
            return {"fitness": None, "degenerate": "non-finite loss at step 3", "beta": beta, "path": []}
        # a standard error that names the beta, so a test can see which reading's error was kept
        return {"fitness": answer, "fitness_stderr": beta / 10, "beta": beta, "final_kl": 1.0, "final_reward_gain": answer, "path": []}


def _proxy(**fitness: Any) -> ProxyConfig:
    return ProxyConfig(fitness=fitness)


def test_without_variants_it_is_one_screen() -> None:
    sandbox = ScriptedSandbox({0.05: 0.8})
    outcome = screen_for_fitness(sandbox, CODE, _proxy(variants=[]), 0, "/tmp", 10.0)
    assert (outcome.status, outcome.fitness, sandbox.betas) == ("evaluated", 0.8, [0.05])
    assert "readings" not in outcome.result


def test_by_default_the_fitness_is_the_worst_case_of_beta_and_twice_beta() -> None:
    sandbox = ScriptedSandbox({0.05: 0.8, 0.1: 0.7})
    outcome = screen_for_fitness(sandbox, CODE, _proxy(), 0, "/tmp", 10.0)
    assert sandbox.betas == [0.05, 0.1] and outcome.fitness == 0.7


@pytest.mark.parametrize("aggregate, expected", [("min", 0.5), ("mean", 0.65)])
def test_the_readings_are_aggregated(aggregate: str, expected: float) -> None:
    sandbox = ScriptedSandbox({0.05: 0.8, 0.1: 0.5})
    outcome = screen_for_fitness(sandbox, CODE, _proxy(variants=[{"beta": 0.1}], aggregate=aggregate), 0, "/tmp", 10.0)
    assert outcome.fitness == pytest.approx(expected)
    assert sandbox.betas == [0.05, 0.1]
    assert [r["beta"] for r in outcome.result["readings"]] == [0.05, 0.1]
    assert [r["fitness"] for r in outcome.result["readings"]] == [0.8, 0.5]
    assert outcome.result["complete"] is True and outcome.result["aggregate"] == aggregate
    assert outcome.result["fitness"] == pytest.approx(expected)  # the same as the archive's fitness column
    assert outcome.result["final_reward_gain"] == 0.8  # the first screen's path and final point are kept


def test_a_first_reading_below_the_threshold_skips_the_variants() -> None:
    sandbox = ScriptedSandbox({0.05: 0.6, 0.1: 0.9})
    proxy = _proxy(variants=[{"beta": 0.1}])
    skipped = screen_for_fitness(sandbox, CODE, proxy, 0, "/tmp", 10.0, threshold=0.7)
    assert sandbox.betas == [0.05]  # min(0.6, anything) < 0.7: the variant cannot matter
    assert skipped.fitness == 0.6 and skipped.result["complete"] is False
    screened = screen_for_fitness(ScriptedSandbox({0.05: 0.6, 0.1: 0.9}), CODE, proxy, 0, "/tmp", 10.0, threshold=0.5)
    assert screened.fitness == 0.6 and screened.result["complete"] is True


def test_the_fitness_carries_the_standard_error_of_its_reading() -> None:
    # min: the error of the lowest reading (beta 0.1's); mean: that of the mean of independent readings
    low = screen_for_fitness(ScriptedSandbox({0.05: 0.8, 0.1: 0.5}), CODE, _proxy(variants=[{"beta": 0.1}]), 0, "/tmp", 10.0)
    assert low.result["fitness_stderr"] == pytest.approx(0.01)
    assert [r["fitness_stderr"] for r in low.result["readings"]] == [pytest.approx(0.005), pytest.approx(0.01)]
    mean = screen_for_fitness(
        ScriptedSandbox({0.05: 0.8, 0.1: 0.5}), CODE, _proxy(variants=[{"beta": 0.1}], aggregate="mean"), 0, "/tmp", 10.0
    )
    assert mean.result["fitness_stderr"] == pytest.approx((0.005**2 + 0.01**2) ** 0.5 / 2)
    # a lazily skipped variant: the first reading and its own error
    skipped = screen_for_fitness(ScriptedSandbox({0.05: 0.6, 0.1: 0.9}), CODE, _proxy(variants=[{"beta": 0.1}]), 0, "/tmp", 10.0, threshold=0.7)
    assert skipped.result["fitness_stderr"] == pytest.approx(0.005)


def test_the_mean_never_skips() -> None:
    sandbox = ScriptedSandbox({0.05: 0.6, 0.1: 0.9})
    outcome = screen_for_fitness(sandbox, CODE, _proxy(variants=[{"beta": 0.1}], aggregate="mean"), 0, "/tmp", 10.0, threshold=0.7)
    assert sandbox.betas == [0.05, 0.1] and outcome.fitness == pytest.approx(0.75)


def test_a_variant_that_fails_reads_zero_with_its_reason() -> None:
    proxy = _proxy(variants=[{"beta": 0.1}, {"beta": 0.2}], aggregate="mean")
    sandbox = ScriptedSandbox({0.05: 0.9, 0.1: "degenerate", 0.2: SandboxError("timeout", "took longer than 10 s")})
    outcome = screen_for_fitness(sandbox, CODE, proxy, 0, "/tmp", 10.0)
    assert outcome.status == "evaluated" and outcome.fitness == pytest.approx(0.3)  # (0.9 + 0 + 0) / 3
    degenerate, failed = outcome.result["readings"][1:]
    assert degenerate["status"] == "degenerate" and "non-finite loss" in degenerate["error"]
    assert failed["status"] == "failed" and failed["error"].startswith("timeout")


def test_a_failing_first_reading_is_the_outcome_as_it_is() -> None:
    sandbox = ScriptedSandbox({0.05: "degenerate", 0.1: 0.9})
    outcome = screen_for_fitness(sandbox, CODE, _proxy(variants=[{"beta": 0.1}]), 0, "/tmp", 10.0)
    assert outcome.status == "degenerate" and outcome.fitness is None and sandbox.betas == [0.05]
