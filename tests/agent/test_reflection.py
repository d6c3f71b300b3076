"""The offline reflection and the outcome shown to an LLM: a difference inside the noise floor is never a win."""
from __future__ import annotations

import dataclasses

from lossforge.rundir.archive import Candidate
from lossforge.proposers.context import view
from lossforge.proposers.llm.prompts import describe_outcome
from lossforge.agent.reflection import reflect_offline

_FIELDS = {f.name: None for f in dataclasses.fields(Candidate)}


def _evaluated(fitness: float, stderr: float) -> Candidate:
    fields = {**_FIELDS, "id": 7, "step": 7, "name": "mix_7", "code": "def f(): pass", "code_hash": "h", "parent_ids": [],
              "status": "evaluated", "timings": {}, "created_at": 0.0, "updated_at": 0.0,
              "fitness": fitness, "result": {"fitness": fitness, "fitness_stderr": stderr, "final_kl": 0.5}}
    return Candidate(**fields)


def test_a_difference_inside_the_noise_floor_is_level_not_a_new_best() -> None:
    candidate = _evaluated(0.800, 0.010)
    assert candidate.fitness_stderr == 0.010
    note = reflect_offline(candidate, best_before=0.790, best_before_stderr=0.010)  # +0.010 < 2 * 0.0141
    assert "level with the best" in note and "New best" not in note and "+- 0.010" in note
    outcome = describe_outcome(view(candidate), best_before=0.790, best_before_stderr=0.010)
    assert "level with the best" in outcome and "a new best" not in outcome


def test_a_difference_beyond_the_noise_floor_is_a_new_best() -> None:
    candidate = _evaluated(0.850, 0.010)
    assert reflect_offline(candidate, best_before=0.790, best_before_stderr=0.010).startswith("New best")
    assert "a new best" in describe_outcome(view(candidate), best_before=0.790, best_before_stderr=0.010)
    below = _evaluated(0.700, 0.010)
    assert "below the best" in reflect_offline(below, best_before=0.790, best_before_stderr=0.010)
