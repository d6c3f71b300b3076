"""Choosing a proposer from the configuration."""
from __future__ import annotations

from lossforge.agent.proposer import Proposer
from lossforge.config import RunConfig


def make_proposer(config: RunConfig) -> tuple[Proposer, str]:
    """The configured proposer and its name (as recorded in the archive)."""
    from lossforge.agent.evolution import EvolutionaryProposer, RandomSearchProposer

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
    if kind == "random":
        return RandomSearchProposer(seed=config.search.seed), "random"
    raise ValueError(f"unknown proposer kind {kind!r}")
