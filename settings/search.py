"""How the search runs: the ``[search]``, ``[proposer]`` and ``[train]`` sections of a run configuration.

Plain pydantic. Checks that need more than the values themselves (that each ``search.seed_losses`` file
holds an importable loss) are made by ``lossforge.config.RunConfig``, which composes these sections.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lossforge.settings.base import Strict
from lossforge.settings.judge import JudgeEndpoint
from lossforge.settings.launcher import LauncherSettings
from lossforge.settings.llm import LLMProposerConfig

__all__ = ["EvolutionConfig", "ProposerConfig", "SearchConfig", "TrainConfig"]


class SearchConfig(Strict):
    """When the search stops and how it behaves."""

    generations: int = Field(20, ge=1, description="Evaluated candidates to add in this invocation.")
    seed: int = Field(0, ge=0, description="Seed of the proposer and of the proxy world.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after this much wall time (this process).")
    target_fitness: float | None = Field(None, description="Stop as soon as a candidate reaches this fitness.")
    max_repair_attempts: int = Field(2, ge=0, le=10, description="Repairs of a failed candidate before moving on.")
    max_proposals_per_generation: int = Field(
        50, ge=1, description="Give up if this many proposals in a row are rejected or duplicates."
    )
    dedup: bool = Field(True, description="Reject candidates that behave like one already in the archive.")
    concurrency: int = Field(
        1, ge=1, le=256,
        description="Candidates in flight at once: their proposals, LLM calls, checks, screens and training jobs "
                    "overlap (1: one candidate at a time, the original search and its results for a seed).")
    executor: Literal["local", "ray"] = Field(
        "local", description="Where checks, screens and training jobs run: 'local' (this machine's sandbox "
                             "workers and launcher) or 'ray' (Ray tasks, each in a sandbox on its worker).")
    ray_address: str | None = Field(
        None, description="executor = 'ray': the cluster's address ('auto' joins a running one); none starts "
                          "a local Ray instance for the run.")
    seed_losses: list[Path] = Field(
        default_factory=list,
        description="Loss files proposed first, in order, before the proposer's own (see `lossforge import`): "
                    "candidates or any form `lossforge import` brings in (each importable loss of a file).",
    )


class EvolutionConfig(Strict):
    """The offline genetic-programming proposer."""

    tournament_size: int = Field(4, ge=1)
    p_crossover: float = Field(0.5, ge=0, le=1)
    max_depth: int = Field(6, ge=2, le=12)


class ProposerConfig(Strict):
    """Which proposer writes candidates."""

    kind: Literal["evolution", "random", "llm"] = "evolution"
    evolution: EvolutionConfig = EvolutionConfig()
    llm: LLMProposerConfig = LLMProposerConfig()


class TrainConfig(Strict):
    """The optional full-training stage: promoted candidates are trained (TRL job) and judged."""

    enabled: bool = Field(False, description="Train candidates that pass the promotion bar after their screen.")
    promote_top: int = Field(1, ge=1, description="Promote a candidate whose proxy fitness is in the archive's top k.")
    min_fitness: float | None = Field(None, description="...and at least this proxy fitness.")
    max_jobs: int | None = Field(None, ge=1, description="Train at most this many candidates in the run.")
    job: Path | None = Field(None, description="TOML or JSON file of the training job's JobConfig (model, dataset, ...).")
    launcher: LauncherSettings = Field(LauncherSettings(), description="'local', 'ray', 'slurm' or a table of options.")
    jobs_dir: Path | None = Field(None, description="Where job directories go (default: RUN_DIR/jobs).")
    time_limit_s: float = Field(6 * 3600.0, gt=0, description="A training job is killed after this many seconds.")
    poll_s: float = Field(5.0, gt=0, description="Seconds between status polls of a running job.")
    benchmark: Literal["mt-bench", "arena-hard"] = "mt-bench"
    judge: JudgeEndpoint | None = Field(None, description="LLM judge; none: fitness is held-out preference accuracy.")

    @model_validator(mode="after")
    def _job_when_enabled(self) -> "TrainConfig":
        if self.enabled and self.job is None:
            raise ValueError("train.enabled needs train.job: a TOML or JSON file of the job's JobConfig (model, dataset, ...)")
        return self
