"""The package's shape: layers that point one way, modules short enough to read, light leaves.

import-linter checks the direction (pyproject.toml ``[tool.importlinter]``: layers, settings as leaves,
no cycle between siblings; imports inside functions count). This file checks what it cannot say.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500
# Data, not logic: the loss library is a list of published losses with their sources (issue 15 allows it).
LONG_ALLOWED = {"trainer/losses.py"}


def _modules() -> list[Path]:
    skip = {".venv", "tests", "docs", "scripts", "docker", ".git", "__pycache__", "lossforge.egg-info"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("import-linter is missing: ./scripts/setup.sh dev installs it")
    result = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_short_enough_to_read(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    if rel in LONG_ALLOWED:
        return
    assert lines <= MAX_LINES, f"{rel} has {lines} lines: split it along its sections (at most {MAX_LINES})"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_has_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if path.name == "__init__.py" and not tree.body:
        return
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)}: add a short top docstring (what it does, what it guarantees)"


def test_every_package_is_installed() -> None:
    """A folder with __init__.py missing from pyproject's packages would be left out of a non-editable install."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"lossforge"} | {
        "lossforge." + ".".join(p.parent.relative_to(ROOT).parts) for p in _modules() if p.name == "__init__.py" and p.parent != ROOT
    }
    assert found == listed, f"add to pyproject.toml packages: {sorted(found - listed)}; remove: {sorted(listed - found)}"


def _loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    return set(out.split())


def test_config_loads_only_settings() -> None:
    loaded = _loaded_by("lossforge.config")
    ours = {m for m in loaded if m.startswith("lossforge.")}
    allowed = ("lossforge.config", "lossforge.errors", "lossforge.settings", "lossforge.candidate.importer")
    assert {m for m in ours if m != "lossforge.candidate" and not m.startswith(allowed)} == set()
    assert not {"torch", "numpy", "openai", "langgraph"} & loaded


def test_sandbox_factory_loads_no_search_or_judge() -> None:
    loaded = _loaded_by("lossforge.sandbox.factory")
    ours = {m.split(".")[1] for m in loaded if m.startswith("lossforge.")}
    assert ours <= {"sandbox", "candidate", "settings", "errors"}, sorted(ours)
    assert not {"numpy", "openai", "langgraph"} & loaded
