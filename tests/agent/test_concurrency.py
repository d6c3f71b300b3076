"""Several candidates in flight (`[search] concurrency`): the same results at 1, nothing twice at K, resume.

Real searches on the tiny proxy with the real sandbox: `concurrency = 1` reproduces the archive the
single-graph search wrote before the supervisor existed (tests/agent/data/sequential_reference.json); at
K > 1 the run evaluates exactly its target, hands out every step and generation number once, reflects on
every candidate and leaves nothing in flight; a `lossforge run` killed with -9 while K candidates are in
flight and started again evaluates nothing twice, loses nothing and finishes the interrupted ones.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lossforge.agent.runner import run_search
from lossforge.agent.supervisor import IN_FLIGHT_META
from lossforge.rundir.archive import Archive
from tests.agent.sequential_reference import CASES, archive_record, case_config
from tests.conftest import tiny_config_toml

pytestmark = pytest.mark.slow

REFERENCE = json.loads((Path(__file__).parent / "data" / "sequential_reference.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


def _same(expected: list[dict], actual: list[dict]) -> None:
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    for want, got in zip(expected, actual):
        for key, value in want.items():
            if key == "fitness" and value is not None and got[key] is not None:
                assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9), (want["step"], key, value, got[key])
            else:
                assert got[key] == value, (want["step"], key, value, got[key])


@pytest.mark.parametrize("kind,seed,generations", CASES)
def test_concurrency_1_gives_the_sequential_search_s_archive(tmp_path, cache_dir, kind, seed, generations) -> None:
    summary = run_search(tmp_path / "run", case_config(kind, seed, generations, cache_dir, concurrency=1))
    assert summary.evaluated == generations
    _same(REFERENCE[f"{kind}-{seed}-{generations}"], archive_record(tmp_path / "run"))


def test_k_in_flight_evaluate_the_target_once_each(tmp_path, cache_dir) -> None:
    events: list[dict] = []
    config = case_config("random", 1, 5, cache_dir, concurrency=3)
    summary = run_search(tmp_path / "run", config, on_event=events.append)
    archive = Archive(tmp_path / "run" / "archive.sqlite", readonly=True)
    rows = archive.all()
    assert summary.evaluated == archive.count_evaluated() == 5  # never past the target
    assert len({c.step for c in rows}) == len(rows) == max(c.step for c in rows) + 1  # every step once, no gap
    assert sorted(c.generation for c in rows if c.generation is not None) == [1, 2, 3, 4, 5]
    assert all(c.reflection for c in rows), "a candidate was not reflected on"
    assert archive.get_meta(IN_FLIGHT_META) == []
    evaluated = Counter(e["candidate_id"] for e in events if e["kind"] == "evaluated")
    assert evaluated and max(evaluated.values()) == 1
    started = [e["candidate_id"] for e in events if e["kind"] == "checking"]
    assert len(started) == len(set(started))
    timings = summary.timings
    assert timings["work"] > 0 and 0 <= timings["agent"] < timings["wall"]
    # the candidates really overlapped: some candidate was checked while another was still being screened
    open_screens: set[int] = set()
    overlapped = False
    for event in events:
        if event["kind"] == "screen_started":
            open_screens.add(event["candidate_id"])
        elif event["kind"] == "evaluated":
            open_screens.discard(event["candidate_id"])
        elif event["kind"] == "checking" and open_screens:
            overlapped = True
    assert overlapped, "with concurrency 3 no check ran during another candidate's screen"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lossforge.cli", *args]


def test_kill_9_with_candidates_in_flight_then_resume(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=6, extra='seed = 1\nconcurrency = 3\n[proposer]\nkind = "random"\n'))
    run_dir = tmp_path / "run"
    command = _cli("run", "--run-dir", str(run_dir), "--config", str(config), "--jsonl", "--quiet")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    screening: set[int] = set()
    evaluated = 0
    deadline = time.time() + 300
    try:
        for line in process.stdout:
            event = json.loads(line)
            if event["kind"] == "screen_started":
                screening.add(event["candidate_id"])
            elif event["kind"] == "evaluated":
                screening.discard(event["candidate_id"])
                evaluated += 1
            if evaluated >= 1 and len(screening) >= 2:  # two screens in flight at once: kill now
                break
            assert time.time() < deadline, "the search made no progress"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    killed_in_flight = set(screening)
    assert len(killed_in_flight) >= 2
    before = {c.id: (c.fitness, c.generation) for c in Archive(run_dir / "archive.sqlite", readonly=True).all()
              if c.generation is not None}

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "run_resumed" and e["target"] == 6 and e["in_flight"] for e in events)
    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    assert archive.count_evaluated() == 6
    for candidate_id, (fitness, generation) in before.items():  # nothing finished was redone or lost
        assert (archive.get(candidate_id).fitness, archive.get(candidate_id).generation) == (fitness, generation)
    for candidate_id in killed_in_flight:  # each interrupted screen finished once
        assert archive.get(candidate_id).status in ("evaluated", "degenerate", "failed")
    finished = Counter(e["candidate_id"] for e in events if e["kind"] == "evaluated")
    assert max(finished.values()) == 1, f"a candidate was evaluated twice: {finished}"
    assert sorted(c.generation for c in archive.all() if c.generation is not None) == list(range(1, 7))
    assert {c.status for c in archive.all()} <= {"evaluated", "degenerate", "rejected", "duplicate", "failed"}
    assert archive.get_meta(IN_FLIGHT_META) == []


def test_an_interrupted_run_of_the_single_graph_search_continues(tmp_path, cache_dir) -> None:
    """A run directory whose single-graph search (before the supervisor) was killed with a candidate in
    flight: its checkpoint (thread "search") is carried over once, the candidate is finished, the target kept."""
    import sqlite3
    from typing import TypedDict

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    from lossforge.candidate.fingerprint import code_hash
    from lossforge.trainer.losses import library_code

    class OldState(TypedDict, total=False):  # the single graph's state, as it was checkpointed
        step: int
        target_evaluated: int
        candidate_id: int | None
        repair_attempts: int
        repair_of: int | None
        rejected_in_a_row: int
        stop_reason: str | None

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    archive = Archive(run_dir / "archive.sqlite")
    dpo = library_code("dpo")
    candidate_id = archive.upsert_proposal(0, name="dpo", code=dpo, code_hash=code_hash(dpo), proposer="evolution")
    archive.close()
    old = StateGraph(OldState)
    old.add_node("propose", lambda state: {"step": 1, "candidate_id": candidate_id})
    old.add_node("check", lambda state: {})
    old.add_edge(START, "propose")
    old.add_edge("propose", "check")
    old.add_edge("check", END)
    connection = sqlite3.connect(run_dir / "checkpoints.sqlite", check_same_thread=False)
    graph = old.compile(checkpointer=SqliteSaver(connection), interrupt_before=["check"])  # "killed" before check
    graph.invoke({"step": 0, "target_evaluated": 2, "candidate_id": None, "repair_attempts": 0, "repair_of": None,
                  "rejected_in_a_row": 0, "stop_reason": None}, {"configurable": {"thread_id": "search"}})
    connection.close()

    events: list[dict] = []
    summary = run_search(run_dir, case_config("evolution", 0, 5, cache_dir), on_event=events.append)
    assert summary.resumed and summary.evaluated == 2  # the old target (2), not a new 5
    resumed = [e for e in events if e["kind"] == "run_resumed"]
    assert resumed and resumed[0]["in_flight"] == [0] and resumed[0]["target"] == 2
    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    first = archive.get(candidate_id)
    assert first.status == "evaluated" and first.generation == 1 and first.reflection  # finished, once
    assert [c.step for c in archive.all()] == list(range(len(archive.all())))  # the next steps follow on
