"""Offline reflection: a short, rule-based note on each outcome, stored with the candidate.

The LLM proposer replaces this with the model's own reflection; the offline one keeps the same shape
(what happened, what it suggests) so the archive, the TUI and the report read the same fields whatever
the proposer.
"""
from __future__ import annotations

from lossforge.agent.archive import Candidate
from lossforge.agent.prompts import readings_line


def reflect_offline(candidate: Candidate, best_before: float | None) -> str:
    """One or two sentences on `candidate`'s outcome relative to the best fitness before it."""
    if candidate.status == "rejected":
        return f"Rejected at check '{candidate.failed_check}'; variations of this structure should avoid that failure."
    if candidate.status == "duplicate":
        return f"Behaves like #{candidate.duplicate_of}; no new information, so explore further from the parents."
    if candidate.status in ("degenerate", "failed"):
        return f"Training failed ({candidate.error}); the loss is numerically unsafe during optimisation."
    if candidate.fitness is None:
        return "No fitness recorded."
    result = candidate.result or {}
    kl = result.get("final_kl")
    detail = f" final KL {kl:.2f} nats," if isinstance(kl, float) else ""
    note = _relative_note(candidate.fitness, best_before, detail)
    readings = readings_line(result)
    return f"{note} {readings}" if readings else note


def _relative_note(fitness: float, best_before: float | None, detail: str) -> str:
    if best_before is None:
        return f"First evaluated loss: fitness {fitness:.3f}.{detail} it sets the bar."
    delta = fitness - best_before
    if delta > 0:
        return f"New best: fitness {fitness:.3f} (+{delta:.3f}).{detail} its structure is worth exploiting."
    return f"Fitness {fitness:.3f}, {abs(delta):.3f} below the best.{detail} keep it only as a source of diversity."
