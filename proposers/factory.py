"""Choosing a proposer from the configuration."""
from __future__ import annotations

from lossforge.rundir.archive import LLM_BUDGET_META, Archive
from lossforge.proposers.base import Proposer
from lossforge.config import RunConfig


def make_proposer(config: RunConfig, archive: Archive | None = None) -> tuple[Proposer, str]:
    """The configured proposer and its name (as recorded in the archive); with ``[search] seed_losses``,
    wrapped so that those losses are proposed first (``lossforge.proposers.seeding``).

    With an archive, the LLM proposer's budget is loaded from and saved to its meta table, so spending
    adds up across invocations of the same run directory.
    """
    from lossforge.proposers.seeding import seeded

    proposer, name = _make_proposer(config, archive)
    return seeded(proposer, config.search.seed_losses), name


def _make_proposer(config: RunConfig, archive: Archive | None = None) -> tuple[Proposer, str]:
    from lossforge.proposers.gp.evolution import EvolutionaryProposer
    from lossforge.proposers.gp.random_search import RandomSearchProposer

    kind = config.proposer.kind
    if kind == "evolution":
        evo = config.proposer.evolution
        return (
            EvolutionaryProposer(
                seed=config.search.seed,
                tournament_size=evo.tournament_size,
                p_crossover=evo.p_crossover,
                max_depth=evo.max_depth,
            ),
            "evolution",
        )
    if kind == "llm":
        from lossforge.proposers.llm.proposer import make_llm_proposer

        saved = archive.get_meta(LLM_BUDGET_META) if archive is not None else None
        save = (lambda state: archive.set_meta(LLM_BUDGET_META, state.model_dump())) if archive is not None else None
        proposer = make_llm_proposer(config.proposer.llm, seed=config.search.seed, budget_state=saved, on_budget_change=save)
        return proposer, "llm"
    if kind == "random":
        return RandomSearchProposer(seed=config.search.seed), "random"
    raise ValueError(f"unknown proposer kind {kind!r}")
