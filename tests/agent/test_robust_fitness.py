"""A search whose fitness is the worst case over two betas, with lazy evaluation of the second: real
screens in the sandbox, the archive's top k exact, and the skipped candidates provably out of it."""
from __future__ import annotations

import pytest

from lossforge.rundir.archive import Archive
from lossforge.agent.runner import run_search


def test_a_lazy_min_over_betas_keeps_the_top_k_exact(tmp_path, tiny_run_config) -> None:
    k = 2
    data = tiny_run_config.model_dump()
    data["proxy"]["fitness"] = {"variants": [{"beta": 0.3}], "aggregate": "min", "lazy_top_k": k}
    data["search"]["generations"] = 8
    config = tiny_run_config.model_validate(data)
    run_search(tmp_path, config)
    evaluated = [c for c in Archive(tmp_path / "archive.sqlite", readonly=True).all() if c.fitness is not None]
    assert len(evaluated) == 8

    complete = [c for c in evaluated if c.result["complete"]]
    skipped = [c for c in evaluated if not c.result["complete"]]
    assert len(complete) >= k and skipped, "with k=2 over 8 library losses some second screens are skipped"
    for c in complete:
        readings = c.result["readings"]
        assert [r["beta"] for r in readings] == [pytest.approx(0.05), pytest.approx(0.3)]
        assert c.fitness == pytest.approx(min(r["fitness"] or 0.0 for r in readings))
    for c in skipped:
        assert [r["beta"] for r in c.result["readings"]] == [pytest.approx(0.05)]
        assert c.fitness == c.result["readings"][0]["fitness"]

    top = sorted(evaluated, key=lambda c: (-c.fitness, c.id))[:k]
    assert all(c.result["complete"] for c in top)  # the top k is made of exact worst cases
    for c in skipped:  # and a skipped candidate's upper bound is below the k-th best it was compared with
        earlier = sorted((o.fitness for o in evaluated if o.id < c.id), reverse=True)
        assert len(earlier) >= k and c.fitness < earlier[k - 1]


def test_lazy_top_k_zero_screens_every_variant(tmp_path, tiny_run_config) -> None:
    data = tiny_run_config.model_dump()
    data["proxy"]["fitness"] = {"variants": [{"beta": "3x"}], "aggregate": "min", "lazy_top_k": 0}
    data["search"]["generations"] = 3
    run_search(tmp_path, tiny_run_config.model_validate(data))
    evaluated = [c for c in Archive(tmp_path / "archive.sqlite", readonly=True).all() if c.fitness is not None]
    assert len(evaluated) == 3
    for c in evaluated:
        assert c.result["complete"] and [r["beta"] for r in c.result["readings"]] == [pytest.approx(0.05), pytest.approx(0.15)]  # 3x the screen's 0.05


def test_the_readings_reach_the_reflection_and_the_prompt() -> None:
    from lossforge.proposers.llm.prompts import readings_line

    complete = {
        "aggregate": "min",
        "complete": True,
        "readings": [
            {"beta": 0.1, "fitness": 0.91, "status": "evaluated"},
            {"beta": 0.2, "fitness": None, "status": "degenerate", "error": "non-finite loss at step 4"},
        ],
    }
    line = readings_line(complete)
    assert "beta 0.1: 0.910" in line and "beta 0.2: degenerate (non-finite loss at step 4, counted as 0)" in line
    skipped = {"aggregate": "min", "complete": False, "readings": [{"beta": 0.1, "fitness": 0.5, "status": "evaluated"}]}
    assert "skipped" in readings_line(skipped)
    assert readings_line({"fitness": 0.5}) is None  # a single-setting fitness says nothing extra


def test_the_llm_is_told_the_fitness_reads_several_betas() -> None:
    from lossforge.proposers.llm.prompts import proposal_messages
    from lossforge.proposers.base import ProposalContext

    robust = "\n".join(m["content"] for m in proposal_messages(ProposalContext(beta=0.1, fitness_betas=[0.1, 0.2])))
    assert "the worst (lowest) of the readings at beta 0.1, 0.2" in robust
    plain = "\n".join(m["content"] for m in proposal_messages(ProposalContext(beta=0.1)))
    assert "readings at beta" not in plain
