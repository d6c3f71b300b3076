"""The Proposer seam: what a proposer is given and what it returns.

Every proposer (evolutionary, random, LLM-backed) implements `Proposer.propose(context) -> Proposal`.
The context is a bounded view of the archive, never the whole history, so a proposer's cost does not
grow with the run.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class ArchiveView(BaseModel):
    """One archived candidate as shown to a proposer."""

    id: int
    name: str
    code: str
    status: str
    fitness: float | None = None
    fitness_stderr: float | None = None  # the noise floor of `fitness` (evaluation sampling)
    genome: Any = None  # proposer-specific representation (e.g. an expression tree), JSON-serialisable
    check_summary: str | None = None
    reflection: str | None = None


class ProposalContext(BaseModel):
    """What a proposer sees: the best and recent candidates, failures, hints, and its step number."""

    step: int = 0
    seed: int = 0
    beta: float = 0.1
    fitness_betas: list[float] = Field(default_factory=list)  # every beta the fitness reads ([proxy.fitness]); empty: only `beta`
    fitness_aggregate: str = "min"  # how those readings combine
    best: list[ArchiveView] = Field(default_factory=list)
    recent: list[ArchiveView] = Field(default_factory=list)
    failures: list[ArchiveView] = Field(default_factory=list)
    excluded_ids: list[int] = Field(default_factory=list)
    pinned_ids: list[int] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)
    repair_of: ArchiveView | None = None  # set when the proposer is asked to repair a failed candidate


class Proposal(BaseModel):
    """A proposed candidate: the reasoning, a short name, the source code, and optional provenance."""

    thought: str
    name: str
    code: str
    parent_ids: list[int] = Field(default_factory=list)
    genome: Any = None
    operator: str = ""  # e.g. "seed", "mutate", "crossover", "llm"


@runtime_checkable
class Proposer(Protocol):
    """Anything that turns a context into a new candidate."""

    def propose(self, context: ProposalContext) -> Proposal: ...
