"""Seeding a search with losses of one's own: ``[search] seed_losses``.

``SeededProposer(inner, seeds)`` proposes the given candidates first, one per step and in order, then hands
over to the configured proposer. The seeds come from ``lossforge.candidate.importer.seed_candidates``, so a
seed file may hold a candidate or any form ``lossforge import`` brings in (DiscoPOP's trainer methods, a
TRL ``dpo_loss`` override, TRL's argument names).

What this module guarantees
---------------------------
* Determinism without state, like every proposer: a proposal is a pure function of the seeds, the inner
  proposer and the ``ProposalContext``. Seed i is proposed at step i unless its code is already in the
  context (a resumed run does not propose it again); a repair request always goes to the inner proposer.
* The inner proposer sees the steps after the seeds renumbered from 0 (``step - len(seeds)``), so its own
  seed phase (the evolutionary proposer's library seeds, keyed on the step) is not skipped.
* A seed's proposal has ``operator="seed"`` and no genome; its thought names the file and what the import
  changed.

What it does not guarantee
--------------------------
* That a seed passes the checks: it goes through check, dedup and screen like any candidate.
* The evolutionary proposer breeds only from expression trees: imported seeds are checked, screened and
  ranked with the rest of the archive, and an LLM proposer sees their code, but evolution does not
  recombine them.
"""
from __future__ import annotations

from pathlib import Path

from lossforge.proposers.base import Proposal, ProposalContext, Proposer
from lossforge.candidate.importer import ImportedLoss, seed_candidates

__all__ = ["SeededProposer", "seeded"]


class SeededProposer:
    """Proposes ``seeds`` first, then delegates to ``inner`` (see the module docstring)."""

    def __init__(self, inner: Proposer, seeds: list[ImportedLoss]) -> None:
        self.inner = inner
        self.seeds = list(seeds)

    def propose(self, context: ProposalContext) -> Proposal:
        """Seed ``context.step`` (or a later one not yet in the context), else the inner proposer's proposal."""
        if context.repair_of is None and context.step < len(self.seeds):
            shown = {view.code for view in (*context.best, *context.recent, *context.failures)}
            for index in range(context.step, len(self.seeds)):
                seed = self.seeds[index]
                if seed.code not in shown:
                    changed = "; ".join(seed.changes) if seed.changes else "already in the candidate form"
                    return Proposal(
                        thought=(f"Seed loss {index + 1} of {len(self.seeds)} from [search] seed_losses: "
                                 f"{seed.qualname} in {seed.origin}. Imported: {changed}."),
                        name=seed.name,
                        code=seed.code,
                        operator="seed",
                    )
        shifted = context.model_copy(update={"step": max(0, context.step - len(self.seeds))})
        return self.inner.propose(shifted)


def seeded(inner: Proposer, paths: list[Path]) -> Proposer:
    """``inner`` itself when ``paths`` is empty, else a ``SeededProposer`` with every loss of the files.
    Raises ``lossforge.candidate.importer.ImportError_`` when a file does not import."""
    if not paths:
        return inner
    return SeededProposer(inner, seed_candidates(list(paths)))
