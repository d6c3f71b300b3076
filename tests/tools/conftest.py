"""Fixtures of the tool tests: the tiny proxy as a run TOML, and one small search run made by the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.tools.context import ToolContext, ToolSettings
from tests.conftest import tiny_config_toml


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("tools-config") / "tiny.toml"
    path.write_text(tiny_config_toml(cache_dir, generations=2))
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_toml: Path) -> Path:
    """A finished 2-generation search made by `lossforge run` (this also builds the tiny world's cache)."""
    path = tmp_path_factory.mktemp("tools-run") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lossforge.cli", "run", "--run-dir", str(path), "--config", str(tiny_toml),
         "--generations", "2"],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (path / "archive.sqlite").is_file()
    return path


@pytest.fixture(scope="session")
def tool_context(tiny_toml: Path, run_dir: Path):
    """One context (one real ProcessSandbox) on the tiny proxy, shared by the in-process tool tests."""
    ctx = ToolContext(ToolSettings.from_toml(tiny_toml))
    yield ctx
    ctx.close()
