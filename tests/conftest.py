"""Shared fixtures: a tiny proxy world (seconds to build) cached once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from lossforge.config import RunConfig
from lossforge.settings.proxy import ProxyConfig, ScreenConfig, WorldConfig

TINY_WORLD = dict(sft_sequences=1024, sft_steps=40, sft_batch=64, train_pairs=256, eval_prompts=128, reference_samples_per_prompt=2)
TINY_SCREEN = dict(steps=12, batch_pairs=32, checkpoints=2, eval_samples=128, lr=3e-4, threads=1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-cache")


@pytest.fixture(scope="session")
def tiny_proxy() -> ProxyConfig:
    return ProxyConfig(world=WorldConfig(**TINY_WORLD), screen=ScreenConfig(**TINY_SCREEN))


@pytest.fixture
def tiny_run_config(tiny_proxy: ProxyConfig, cache_dir: Path) -> RunConfig:
    return RunConfig.model_validate(
        {"proxy": tiny_proxy.model_dump(), "cache_dir": str(cache_dir), "search": {"generations": 3}}
    )


def tiny_config_toml(cache_dir: Path, generations: int = 3, extra: str = "") -> str:
    """The tiny settings as a TOML file's text, for CLI tests."""
    world = "\n".join(f"{k} = {v}" for k, v in TINY_WORLD.items())
    screen = "\n".join(f"{k} = {v}" for k, v in TINY_SCREEN.items())
    return (
        f'cache_dir = "{cache_dir}"\n\n[search]\ngenerations = {generations}\n{extra}\n'
        f"[proxy.world]\n{world}\n\n[proxy.screen]\n{screen}\n"
    )
