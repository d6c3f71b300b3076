"""Smoke test as a user runs it: `lossforge tui` in a real terminal (tmux), then its quit key."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_config_toml

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (scripts/test.sh installs it)")]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", "lossforge-test", *args], capture_output=True, text=True, timeout=30).stdout


def test_tui_starts_shows_candidates_and_quits_cleanly(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=30))
    run_dir = tmp_path / "run"
    lossforge = Path(sys.executable).with_name("lossforge")
    command = f"{lossforge} tui --run-dir {run_dir} --config {config}; echo EXITED-$? > {tmp_path / 'exit'}; sleep 60"
    tmux("new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", command)
    try:
        deadline = time.time() + 120
        screen = ""
        while "judged" not in screen:
            assert time.time() < deadline, f"no evaluated candidate on screen:\n{screen}"
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", "tui")
        assert "candidates" in screen and "dpo" in screen
        tmux("send-keys", "-t", "tui", "q")
        deadline = time.time() + 60
        while not (tmp_path / "exit").exists():
            assert time.time() < deadline, "the app did not quit"
            time.sleep(0.3)
        assert (tmp_path / "exit").read_text().strip() == "EXITED-0"
    finally:
        tmux("kill-server")
