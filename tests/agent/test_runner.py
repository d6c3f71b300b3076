"""The search end to end on the tiny proxy: real SQLite archive and checkpoints, resume, lock, kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lossforge.rundir.archive import Archive
from lossforge.rundir.lock import RunLock
from lossforge.agent.runner import ConfigMismatch, run_search
from tests.conftest import tiny_config_toml

pytestmark = pytest.mark.slow


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def test_a_search_evaluates_candidates_and_a_second_invocation_adds_more(tmp_path, tiny_run_config) -> None:
    first = run_search(tmp_path, tiny_run_config)
    assert first.evaluated == 3 and not first.resumed and first.stop_reason == "generations"
    second = run_search(tmp_path, tiny_run_config)
    assert second.evaluated_before == 3 and second.evaluated == 6
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    evaluated = [c for c in archive.all() if c.generation is not None]
    assert sorted(c.generation for c in evaluated) == list(range(1, 7))
    assert all(c.fitness is not None and c.check_report["passed"] for c in evaluated)
    assert len({c.step for c in archive.all()}) == len(archive.all())
    assert (tmp_path / "checkpoints.sqlite").exists()
    kinds = Counter(e["kind"] for e in _events(tmp_path))
    assert kinds["run_started"] == 2 and kinds["evaluated"] == 6


def test_settings_that_change_fitness_are_refused_on_resume(tmp_path, tiny_run_config) -> None:
    run_search(tmp_path, tiny_run_config.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 1})}))
    before = (tmp_path / "archive.sqlite").read_bytes()
    changed = tiny_run_config.model_copy(deep=True)
    changed.proxy.screen.beta = 0.5
    with pytest.raises(ConfigMismatch, match="proxy.screen.beta: 0.05 in the run directory, 0.5 now"):
        run_search(tmp_path, changed)
    assert (tmp_path / "archive.sqlite").read_bytes() == before


def test_a_run_made_before_fitness_variants_continues_with_one_screen(tmp_path, tiny_run_config) -> None:
    one = tiny_run_config.search.model_copy(update={"generations": 1})
    run_search(tmp_path, tiny_run_config.model_copy(update={"search": one}))
    archive = Archive(tmp_path / "archive.sqlite")
    identity = archive.get_meta("fitness_identity")
    del identity["proxy"]["fitness"]  # what a run directory of an earlier lossforge holds
    archive.set_meta("fitness_identity", identity)
    archive.close()

    with pytest.raises(ConfigMismatch, match=r"add \[proxy.fitness\] variants = \[\] to continue it"):
        run_search(tmp_path, tiny_run_config)  # today's default reads two betas: refused, with the way out
    single = tiny_run_config.model_copy(deep=True)
    single.proxy.fitness.variants = []
    two = tiny_run_config.search.model_copy(update={"generations": 2})
    summary = run_search(tmp_path, single.model_copy(update={"search": two}))
    assert summary.evaluated_before == 1 and summary.counts["evaluated"] == 3  # the same search, two more


def test_a_run_made_before_the_lr_schedule_continues_and_a_schedule_change_is_refused(tmp_path, tiny_run_config) -> None:
    one = tiny_run_config.search.model_copy(update={"generations": 1})
    run_search(tmp_path, tiny_run_config.model_copy(update={"search": one}))
    archive = Archive(tmp_path / "archive.sqlite")
    identity = archive.get_meta("fitness_identity")
    for name in ("lr_schedule", "warmup_ratio"):
        del identity["proxy"]["screen"][name]  # what a run directory of an earlier lossforge holds
    archive.set_meta("fitness_identity", identity)
    archive.close()

    cosine = tiny_run_config.model_copy(deep=True)
    cosine.proxy.screen.lr_schedule = "cosine"
    with pytest.raises(ConfigMismatch, match="proxy.screen.lr_schedule: 'constant' in the run directory, 'cosine' now"):
        run_search(tmp_path, cosine)
    lean = tiny_run_config.model_copy(deep=True)
    lean.proxy.screen.final_accuracy = False  # changes no fitness: allowed
    summary = run_search(tmp_path, lean.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 2})}))
    assert summary.evaluated_before == 1 and summary.counts["evaluated"] == 3  # the same search, two more


def test_a_stop_request_ends_the_search_after_the_current_step(tmp_path, tiny_run_config) -> None:
    import threading

    stop = threading.Event()

    def on_event(event: dict) -> None:
        if event["kind"] == "evaluated":
            stop.set()

    summary = run_search(tmp_path, tiny_run_config, on_event=on_event, stop_event=stop)
    assert summary.stop_reason == "stop requested" and summary.evaluated == 1


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lossforge.cli", *args]


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir))
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        done = subprocess.run(_cli("run", "--run-dir", str(run_dir), "--config", str(config)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "is in use by process" in done.stderr and str(os.getpid()) in done.stderr
    assert not (run_dir / "archive.sqlite").exists()


def test_kill_9_during_a_screen_then_resume_loses_nothing_and_evaluates_nothing_twice(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=6))
    run_dir = tmp_path / "run"
    command = _cli("run", "--run-dir", str(run_dir), "--config", str(config), "--jsonl", "--quiet")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    evaluated = 0
    deadline = time.time() + 300
    try:
        for line in process.stdout:
            event = json.loads(line)
            evaluated += event["kind"] == "evaluated"
            if evaluated >= 2 and event["kind"] == "screen_started":
                break
            assert time.time() < deadline, "the search made no progress"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    before = {c.id: (c.fitness, c.generation) for c in Archive(run_dir / "archive.sqlite", readonly=True).all() if c.fitness is not None}
    assert len(before) >= 2

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    events = _events(run_dir)
    assert any(e["kind"] == "run_resumed" and e["target"] == 6 for e in events)

    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    assert archive.count_evaluated() == 6
    for candidate_id, (fitness, generation) in before.items():
        after = archive.get(candidate_id)
        assert (after.fitness, after.generation) == (fitness, generation)
    finished = Counter(e["candidate_id"] for e in events if e["kind"] == "evaluated")
    assert finished and max(finished.values()) == 1, f"a candidate was evaluated twice: {finished}"
    assert sorted(c.generation for c in archive.all() if c.generation is not None) == list(range(1, 7))
    # the candidate whose screen was killed was screened again, not left behind
    assert {c.status for c in archive.all()} <= {"evaluated", "degenerate", "rejected", "duplicate", "failed"}
