"""Fingerprints: same behaviour up to an additive constant is a duplicate; other losses are not."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossforge.candidate.fingerprint import (
    FINGERPRINT_LENGTH,
    NUM_VALUES,
    fingerprint,
    fingerprint_distance,
    nearest,
    same_behaviour,
)


def _rho(pc, pr, rc, rr, beta):
    return beta * ((pc - pr) - (rc - rr))


def dpo(pc, pr, rc, rr, beta):
    return -F.logsigmoid(_rho(pc, pr, rc, rr, beta))


def dpo_softplus(pc, pr, rc, rr, beta):  # the same loss, written differently
    return F.softplus(-_rho(pc, pr, rc, rr, beta))


def dpo_plus_3(pc, pr, rc, rr, beta):
    return dpo(pc, pr, rc, rr, beta) + 3.0


def dpo_times_2(pc, pr, rc, rr, beta):
    return 2.0 * dpo(pc, pr, rc, rr, beta)


def hinge(pc, pr, rc, rr, beta):
    return torch.relu(1.0 - _rho(pc, pr, rc, rr, beta))


def ipo(pc, pr, rc, rr, beta):
    return ((pc - pr) - (rc - rr) - 1.0 / (2.0 * beta)) ** 2


def reference_free(pc, pr, rc, rr, beta):  # SimPO-like: ignores the reference, same form otherwise
    return -F.logsigmoid(beta * (pc - pr))


def batch_coupled(pc, pr, rc, rr, beta):
    rho = _rho(pc, pr, rc, rr, beta)
    return -F.logsigmoid(rho - rho.mean())


@pytest.fixture(scope="module")
def fps() -> dict[str, list[float]]:
    fns = [dpo, dpo_softplus, dpo_plus_3, dpo_times_2, hinge, ipo, reference_free, batch_coupled]
    return {f.__name__: fingerprint(f, beta=0.1) for f in fns}


def test_layout_and_determinism(fps: dict[str, list[float]]) -> None:
    fp = fps["dpo"]
    assert len(fp) == FINGERPRINT_LENGTH
    assert all(math.isfinite(v) for v in fp)
    assert fingerprint(dpo, beta=0.1) == fp
    # gradient part: d loss / d margin = -sigmoid(-m) at m = -5, -1, 0, 1, 5
    expected = [-1.0 / (1.0 + math.exp(m)) for m in (-5.0, -1.0, 0.0, 1.0, 5.0)]
    assert fp[NUM_VALUES:] == pytest.approx(expected, rel=1e-6)


def test_additive_constant_is_a_duplicate(fps: dict[str, list[float]]) -> None:
    assert same_behaviour(fps["dpo"], fps["dpo_plus_3"])
    assert same_behaviour(fps["dpo"], fps["dpo_softplus"])
    assert fingerprint_distance(fps["dpo"], fps["dpo_plus_3"]) < 1e-6


def test_different_losses_are_not_duplicates(fps: dict[str, list[float]]) -> None:
    for other in ("hinge", "ipo", "reference_free", "batch_coupled"):
        assert not same_behaviour(fps["dpo"], fps[other]), other
        assert fingerprint_distance(fps["dpo"], fps[other]) > 0.01, other


def test_positive_scale_is_a_flag(fps: dict[str, list[float]]) -> None:
    assert not same_behaviour(fps["dpo"], fps["dpo_times_2"])
    assert same_behaviour(fps["dpo"], fps["dpo_times_2"], allow_scale=True)
    negated = [-v for v in fps["dpo"]]
    assert not same_behaviour(fps["dpo"], negated, allow_scale=True)


def test_nearest(fps: dict[str, list[float]]) -> None:
    others = [fps["hinge"], fps["ipo"], fps["dpo_plus_3"], fps["reference_free"]]
    index, distance = nearest(fps["dpo"], others)
    assert index == 2 and distance < 1e-6
    assert nearest(fps["dpo"], []) == (-1, math.inf)
    assert fingerprint_distance(fps["dpo"], fps["dpo"][:-1]) == math.inf


def test_batch_coupled_fingerprint_is_stable(fps: dict[str, list[float]]) -> None:
    assert fingerprint(batch_coupled, beta=0.1) == fps["batch_coupled"]
    assert all(math.isfinite(v) for v in fps["batch_coupled"])


def test_non_finite_values_are_json_safe() -> None:
    def exploding(pc, pr, rc, rr, beta):
        return torch.exp(-_rho(pc, pr, rc, rr, beta) * 100.0)

    fp = fingerprint(exploding, beta=0.1)
    assert all(math.isfinite(v) for v in fp)
    assert same_behaviour(fp, list(fp))
    assert not same_behaviour(fp, fingerprint(dpo, beta=0.1))
