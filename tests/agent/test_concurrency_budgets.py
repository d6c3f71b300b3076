"""LLM budgets and what the user sees with several candidates in flight (`[search] concurrency = 3`).

Real searches on the tiny proxy with the real sandbox and the real `openai` client against the project's
fake OpenAI server on 127.0.0.1 (slow answers, so three LLM calls really are in flight at once):

* a call limit stops the run with at most the calls in flight over it, and the archive's persisted
  budget counts exactly the calls the server answered; while it runs, `rundir.in_flight` names each
  walk's stage, and the event log interleaves the candidates with each one's own events in order;
* `lossforge run` killed with -9 while three LLM calls are held by the server, then started again: the
  persisted budget equals the calls answered (the killed ones were never answered, so never charged),
  `lossforge status` showed the three walks proposing, nothing is evaluated twice, nothing stays in flight.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from lossforge.agent.runner import run_search
from lossforge.config import RunConfig
from lossforge.llm.fake_server import FakeServer
from lossforge.proposers.factory import LLM_BUDGET_META
from lossforge.rundir.archive import Archive
from lossforge.rundir.in_flight import IN_FLIGHT_META, Stage, in_flight
from lossforge.sandbox.process import ProcessSandbox
from lossforge.trainer.losses import library_code
from tests.conftest import tiny_config_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROPOSE = "This is proposal"  # in every proposal prompt (not in repairs)
REFLECT = "Your reflection"
LOSSES = ["dpo", "ipo", "slic", "kto_pair", "robust_dpo", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero"]
ORDER = ["proposal", "checking", "check", "screen_started", "evaluated", "reflection"]  # one candidate's events


def proposal(loss: str, seconds: float = 0.0) -> dict[str, Any]:
    text = json.dumps({"thought": f"try {loss}", "name": f"{loss}_variant", "code": library_code(loss)})
    return {"match": PROPOSE, "text": text, "seconds": seconds}


def reflection(seconds: float = 0.0) -> dict[str, Any]:
    return {"match": REFLECT, "text": "Noted.", "seconds": seconds}


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProcessSandbox]:
    box = ProcessSandbox(timeout=20, max_concurrency=3)
    yield box
    box.close()


def test_a_call_limit_at_k_3_overspends_by_at_most_the_calls_in_flight(tmp_path, tiny_run_config, sandbox) -> None:
    limit, k = 5, 3
    script = [proposal(loss, seconds=0.4) for loss in LOSSES] + [reflection(0.1) for _ in LOSSES]
    data = tiny_run_config.model_dump(mode="json")
    data["search"].update(generations=10, concurrency=k)
    data["proposer"] = {"kind": "llm", "llm": {"api_key_env": None, "max_retries": 0, "timeout": 60,
                                                "models": [{"name": "fake-model"}], "budget": {"max_calls": limit}}}
    seen: list[tuple[dict, list]] = []  # (event, what rundir.in_flight read at that moment)
    reader: list[Archive] = []

    def watch(event: dict) -> None:  # events arrive as the walks stream them, a moment after they happen
        if event["kind"] in ("llm_call", "screen_started", "check", "evaluated"):
            if not reader:
                reader.append(Archive(tmp_path / "archive.sqlite", readonly=True))
            seen.append((event, in_flight(reader[0])))

    with FakeServer(script) as server:
        data["proposer"]["llm"]["base_url"] = server.base_url
        summary = run_search(tmp_path, RunConfig.model_validate(data), sandbox=sandbox, on_event=watch)
        answered = len(server.chat_requests)
        assert server.max_in_flight >= 2, "the LLM calls never overlapped"
    assert summary.stop_reason.startswith("LLM budget exhausted"), summary.stop_reason
    assert limit <= answered <= limit + k - 1  # at most the calls in flight when the limit was reached
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    assert archive.get_meta(LLM_BUDGET_META)["calls"] == answered  # every answered call charged and persisted
    events = events_of(tmp_path)
    assert sum(e["kind"] == "llm_call" for e in events) == answered
    assert archive.get_meta(IN_FLIGHT_META) == [] and in_flight(archive) == []

    # what `lossforge status` and the TUI read while it ran: several walks, at their stages, real rows
    stages = {f.stage for _, flying in seen for f in flying}
    assert {Stage.PROPOSING, Stage.SCREENING} <= stages, stages
    assert max(len(flying) for _, flying in seen) >= 2
    ids = {c.id for c in archive.all()}
    assert all(f.candidate_id in ids and f.slot is not None for _, flying in seen for f in flying if f.candidate_id)
    reader[0].close()

    # the event log: candidates interleave, each candidate's own events in order
    mine: dict[int, list[str]] = {}
    positions: dict[int, list[int]] = {}
    for index, event in enumerate(events):
        if event["kind"] in ORDER and event.get("candidate_id") is not None:
            mine.setdefault(event["candidate_id"], []).append(event["kind"])
            positions.setdefault(event["candidate_id"], []).append(index)
    for candidate_id, kinds in mine.items():
        assert kinds == sorted(kinds, key=ORDER.index) and len(set(kinds)) == len(kinds), (candidate_id, kinds)
    assert any(a != b and positions[a][0] < positions[b][0] < positions[a][-1] for a in positions for b in positions), \
        "no two candidates' events interleaved"


def _config(path: Path, cache_dir: Path, base_url: str) -> None:
    path.write_text(tiny_config_toml(cache_dir, generations=6, extra=(
        'seed = 1\nconcurrency = 3\n\n[proposer]\nkind = "llm"\n\n[proposer.llm]\n'
        f'base_url = "{base_url}"\napi_key_env = ""\nmax_retries = 0\ntimeout = 600\nmodels = [{{name = "fake-model"}}]\n'
    )))


def test_kill_9_with_llm_calls_in_flight_then_resume_keeps_the_budget_exact(tmp_path, cache_dir) -> None:
    fast = [proposal(loss, seconds=0.3) for loss in LOSSES[:3]] + [reflection() for _ in range(3)]
    held = [proposal(loss, seconds=600) for loss in LOSSES[3:6]]  # answered only after the kill
    run_dir = tmp_path / "run"
    config = tmp_path / "llm.toml"
    with FakeServer(fast + held) as server:
        _config(config, cache_dir, server.base_url)
        command = [sys.executable, "-m", "lossforge.cli", "run", "--run-dir", str(run_dir), "--config", str(config), "--quiet"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        held_steps = set(range(len(fast), len(fast) + len(held)))
        deadline = time.time() + 400
        try:
            while sum(r.step in held_steps for r in server.chat_requests) < 3:  # three walks wait on the LLM
                assert process.poll() is None, process.stderr.read()[-3000:]
                assert time.time() < deadline, "three LLM calls were never in flight at once"
                time.sleep(0.2)
            status = subprocess.run([sys.executable, "-m", "lossforge.cli", "status", str(run_dir), "--json"],
                                    capture_output=True, text=True, timeout=120, cwd=ROOT)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        killed_requests = 3
        answered_before = len(server.chat_requests) - killed_requests
        assert status.returncode == 0, status.stderr
        flying = json.loads(status.stdout)["in_flight"]
        assert [f["stage"] for f in flying] == ["proposing"] * 3 and all(f["candidate_id"] is None for f in flying)
        archive = Archive(run_dir / "archive.sqlite", readonly=True)
        assert archive.get_meta(LLM_BUDGET_META)["calls"] == answered_before == 6  # 3 proposals, 3 reflections
        assert sum(e["kind"] == "llm_call" for e in events_of(run_dir)) == answered_before
        before = {c.id: (c.fitness, c.generation) for c in archive.all() if c.generation is not None}
        assert len(before) == 3
        archive.close()

        server.add(*[proposal(loss) for loss in LOSSES[6:9]], *[reflection() for _ in range(3)])
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        answered = len(server.chat_requests) - killed_requests
    events = events_of(run_dir)
    assert any(e["kind"] == "run_resumed" and len(e["in_flight"]) == 3 for e in events)
    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    assert archive.count_evaluated() == 6 and answered == 12
    assert archive.get_meta(LLM_BUDGET_META)["calls"] == answered  # exact after the resume
    assert sum(e["kind"] == "llm_call" for e in events) == answered
    for candidate_id, (fitness, generation) in before.items():  # nothing finished was redone or lost
        assert (archive.get(candidate_id).fitness, archive.get(candidate_id).generation) == (fitness, generation)
    evaluated = Counter(e["candidate_id"] for e in events if e["kind"] == "evaluated")
    assert max(evaluated.values()) == 1, f"a candidate was evaluated twice: {evaluated}"
    assert sorted(c.generation for c in archive.all() if c.generation is not None) == list(range(1, 7))
    assert all(c.reflection for c in archive.all())
    assert archive.get_meta(IN_FLIGHT_META) == [] and in_flight(archive) == []
