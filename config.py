"""The run configuration: one TOML file, validated by pydantic before anything runs.

Every section forbids unknown keys, so a typo (`generatoins = 5`) is an error that names the key and
the section instead of a silently ignored setting. `load_config(path, overrides)` reads the file (or
the defaults when there is none), applies command-line overrides, and returns a `RunConfig` or raises
`ConfigError` with every problem listed.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lossforge.agent.llm_settings import LLMProposerConfig  # pydantic only: no openai, LangGraph or torch
from lossforge.evaluators.judge_run import JudgeEndpoint  # pydantic only
from lossforge.trainer.launchers.settings import LauncherSettings  # pydantic only
from lossforge.trainer.proxy.config import ProxyConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchConfig(_Strict):
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
    seed_losses: list[Path] = Field(
        default_factory=list,
        description="Loss files proposed first, in order, before the proposer's own (see `lossforge import`): "
                    "candidates or any form `lossforge import` brings in (each importable loss of a file).",
    )

    @model_validator(mode="after")
    def _seed_losses_import(self) -> "SearchConfig":
        from lossforge.candidate.importer import seed_problems  # ast only: no torch

        problems = seed_problems(self.seed_losses)
        if problems:
            raise ValueError("search.seed_losses: " + "; ".join(problems))
        return self


class EvolutionConfig(_Strict):
    """The offline genetic-programming proposer."""

    tournament_size: int = Field(4, ge=1)
    p_crossover: float = Field(0.5, ge=0, le=1)
    max_depth: int = Field(6, ge=2, le=12)


class ProposerConfig(_Strict):
    """Which proposer writes candidates."""

    kind: Literal["evolution", "random", "llm"] = "evolution"
    evolution: EvolutionConfig = EvolutionConfig()
    llm: LLMProposerConfig = LLMProposerConfig()


class DockerSandboxConfig(_Strict):
    """The Docker backend's container (``[sandbox.docker]``; see lossforge.sandbox.docker_backend)."""

    image: str | None = Field(None, description="An image built from docker/Dockerfile; None: a skeleton image "
                                                "made locally, with the host's Python bound read-only.")
    host_python: bool = Field(True, description="Bind the host's /usr, Python and lossforge read-only (False "
                                                "with an own image).")
    memory_mb: int | None = Field(None, ge=512, description="Container memory limit (None: memory_mb + 1024).")
    pids_limit: int = Field(128, ge=16, description="Processes and threads in the container.")
    tmpfs_mb: int = Field(64, ge=8, description="Size of the container's /tmp (the children's scratch).")
    base_url: str | None = Field(None, description="The engine, e.g. unix:///var/run/docker.sock (None: DOCKER_HOST).")


class SandboxConfig(_Strict):
    """Where candidate code runs and its limits."""

    backend: Literal["process", "docker"] = Field(
        "process", description="process: the isolated worker server (bubblewrap/unshare); docker: the same "
                               "server in a locked-down container.")
    isolation: Literal["auto", "bwrap", "unshare", "none"] = Field(
        "auto", description="The process backend's isolation (auto: the strongest this host allows).")
    docker: DockerSandboxConfig = DockerSandboxConfig()
    check_timeout: float = Field(10.0, gt=0, description="Seconds for the unit checks of one candidate.")
    screen_timeout: float = Field(180.0, gt=0, description="Seconds for the proxy screen of one candidate.")
    memory_mb: int | None = Field(4096, ge=256, description="Address-space limit of a sandboxed child.")


class TrainConfig(_Strict):
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


class RunConfig(_Strict):
    """The whole configuration of a discovery run."""

    search: SearchConfig = SearchConfig()
    proposer: ProposerConfig = ProposerConfig()
    sandbox: SandboxConfig = SandboxConfig()
    proxy: ProxyConfig = ProxyConfig()
    train: TrainConfig = TrainConfig()
    cache_dir: Path = Field(
        Path("~/.cache/lossforge"), description="Where proxy worlds (SFT model, pairs) are cached, shared by runs."
    )

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def fitness_identity(self) -> dict[str, Any]:
        """The settings that make fitness values comparable; a resumed run must not change them."""
        proxy = self.proxy.model_dump()
        if not self.proxy.fitness.variants:  # one screen: how readings would combine changes nothing
            proxy["fitness"] = {"variants": []}
        return {"seed": self.search.seed, "proxy": proxy}


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message lists every problem."""


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{where}': remove it or check its spelling (see README, 'Configuration')")
        else:
            lines.append(f"  - {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read `path` (TOML) if given, apply dotted `overrides` (e.g. {"search.seed": 3}), validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from error
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from error
