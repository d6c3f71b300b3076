"""Offline reflection: a short, rule-based note on each outcome, stored with the candidate.

The LLM proposer replaces this with the model's own reflection; the offline one keeps the same shape
(what happened, what it suggests) so the archive, the TUI and the report read the same fields whatever
the proposer.
"""
from __future__ import annotations

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import Candidate
from lossforge.proposers.llm.prompts import readings_line
from lossforge.trainer.proxy.fitness import compare


def reflect_offline(candidate: Candidate, best_before: float | None, best_before_stderr: float | None = None) -> str:
    """One or two sentences on `candidate`'s outcome relative to the best fitness before it.

    A difference within the noise floor (`lossforge.trainer.proxy.fitness.compare` of the two
    fitnesses' standard errors) is called level, never a new best.
    """
    if candidate.status == CandidateStatus.REJECTED:
        return f"Rejected at check '{candidate.failed_check}'; variations of this structure should avoid that failure."
    if candidate.status == CandidateStatus.DUPLICATE:
        return f"Behaves like #{candidate.duplicate_of}; no new information, so explore further from the parents."
    if candidate.status in (CandidateStatus.DEGENERATE, CandidateStatus.FAILED):
        return f"Training failed ({candidate.error}); the loss is numerically unsafe during optimisation."
    if candidate.fitness is None:
        return "No fitness recorded."
    result = candidate.result or {}
    kl = result.get("final_kl")
    detail = f" final KL {kl:.2f} nats," if isinstance(kl, float) else ""
    note = _relative_note(candidate.fitness, candidate.fitness_stderr, best_before, best_before_stderr, detail)
    readings = readings_line(result)
    return f"{note} {readings}" if readings else note


def _relative_note(fitness: float, stderr: float | None, best_before: float | None, best_stderr: float | None, detail: str) -> str:
    shown = f"{fitness:.3f}" + (f" +- {stderr:.3f}" if stderr else "")
    if best_before is None:
        return f"First evaluated loss: fitness {shown}.{detail} it sets the bar."
    delta = fitness - best_before
    relation, floor = compare(fitness, stderr, best_before, best_stderr)
    if relation == "win":
        return f"New best: fitness {shown} (+{delta:.3f}, above the noise floor {floor:.3f}).{detail} its structure is worth exploiting."
    if relation == "level":
        return f"Fitness {shown}, level with the best ({delta:+.3f}, within the noise floor {floor:.3f}).{detail} not a win; a variant may still help."
    return f"Fitness {shown}, {abs(delta):.3f} below the best.{detail} keep it only as a source of diversity."
