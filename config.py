"""The run configuration: one TOML file, validated by pydantic before anything runs.

``RunConfig`` composes the sections defined in ``lossforge.settings`` (search, proposer, sandbox,
proxy, train) and adds the checks that need more than the values (each ``search.seed_losses`` file
holds a loss ``lossforge import`` can bring in). It imports nothing that runs: no sandbox, trainer,
evaluator or LLM client.

Every section forbids unknown keys, so a typo (`generatoins = 5`) is an error that names the key and
the section instead of a silently ignored setting. `load_config(path, overrides)` reads the file (or
the defaults when there is none), applies command-line overrides, and returns a `RunConfig` or raises
`ConfigError` with every problem listed.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from lossforge.errors import UsageError
from lossforge.candidate.importer import seed_problems  # ast only: no torch
from lossforge.settings.base import Strict
from lossforge.settings.proxy import ProxyConfig
from lossforge.settings.sandbox import SandboxConfig
from lossforge.settings.search import ProposerConfig, SearchConfig, TrainConfig

__all__ = ["ConfigError", "RunConfig", "load_config"]


class RunConfig(Strict):
    """The whole configuration of a discovery run."""

    search: SearchConfig = SearchConfig()
    proposer: ProposerConfig = ProposerConfig()
    sandbox: SandboxConfig = SandboxConfig()
    proxy: ProxyConfig = ProxyConfig()
    train: TrainConfig = TrainConfig()
    cache_dir: Path = Field(
        Path("~/.cache/lossforge"), description="Where proxy worlds (SFT model, pairs) are cached, shared by runs."
    )

    @field_validator("search")
    @classmethod
    def _seed_losses_import(cls, search: SearchConfig) -> SearchConfig:
        problems = seed_problems(search.seed_losses)
        if problems:
            raise ValueError("search.seed_losses: " + "; ".join(problems))
        return search

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def fitness_identity(self) -> dict[str, Any]:
        """The settings that make fitness values comparable; a resumed run must not change them."""
        proxy = self.proxy.model_dump()
        proxy["screen"].pop("final_accuracy")  # a reported extra: no fitness reads it
        if not self.proxy.fitness.variants:  # one screen: how readings would combine changes nothing
            proxy["fitness"] = {"variants": []}
        return {"seed": self.search.seed, "proxy": proxy}


class ConfigError(UsageError):
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
