"""The LLM in the loop end to end: `[proposer] kind = "llm"` through the real search, against the fake server.

Every test here builds the proposer the way `lossforge run` does (`make_proposer` from the configuration,
its budget kept in the archive's meta table), runs the real graph on the tiny proxy with a real sandbox,
and talks to the scripted OpenAI-compatible server through the real `openai` client. Covered: a rejected
first proposal repaired and scored; a dollar budget that stops the run with its state saved, a second
invocation that goes on with a larger budget (same archive, nothing redone, the spending carried over);
the budget running out between a rejection and its repair; and `lossforge run` as a subprocess through a
429 and a garbage answer, with the API key in no byte of the run directory, its logs or its events.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from lossforge.rundir.archive import Archive
from lossforge.rundir.archive import LLM_BUDGET_META
from lossforge.agent.runner import run_search
from lossforge.config import RunConfig
from lossforge.llm.fake_server import FakeServer
from lossforge.sandbox.process import ProcessSandbox
from lossforge.trainer.losses import library_code
from tests.conftest import tiny_config_toml
from tests.support import SCALAR_CODE, SIGMOID_CODE

pytestmark = pytest.mark.slow

KEY_ENV = "LOSSFORGE_E2E_KEY"
KEY = "sk-e2e-Zq7xW4-DISTINCTIVE-5150"

PROPOSE = "This is proposal"  # in every proposal prompt (not in repairs)
REPAIR = "Repair this candidate"
REFLECT = "Your reflection"



def answer(name: str, code: str, thought: str) -> str:
    return json.dumps({"thought": thought, "name": name, "code": code})


def proposal(name: str, code: str, thought: str = "an idea", match: str = PROPOSE, **step: Any) -> dict:
    return {"match": match, "text": answer(name, code, thought), **step}


def reflection(text: str, **step: Any) -> dict:
    return {"match": REFLECT, "text": text, **step}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProcessSandbox]:
    """One warm sandbox for every invocation of this module (a run closes only the sandboxes it made)."""
    box = ProcessSandbox(timeout=20)
    yield box
    box.close()


def llm_config(base: RunConfig, server: FakeServer, *, generations: int, budget: dict | None = None,
               prices: dict | None = None) -> RunConfig:
    data = base.model_dump(mode="json")
    data["search"]["generations"] = generations
    data["proposer"] = {"kind": "llm", "llm": {
        "base_url": server.base_url, "api_key_env": KEY_ENV, "max_retries": 2, "timeout": 20,
        "models": [{"name": "fake-model", "temperature": 0.5}],
        "prices": prices or {}, "budget": budget or {},
    }}
    return RunConfig.model_validate(data)


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def test_a_rejected_first_proposal_is_repaired_scored_and_reflected_on(tmp_path, tiny_run_config, sandbox) -> None:
    script = [
        proposal("scalar_loss", SCALAR_CODE, "Average the DPO loss over the batch."),
        proposal("smooth_sigmoid", SIGMOID_CODE, "The .mean() collapsed the batch; return one loss per pair.",
                 match=REPAIR),
        reflection("The repaired loss trains well; keep per-pair losses."),
    ]
    with FakeServer(script) as server:
        summary = run_search(tmp_path, llm_config(tiny_run_config, server, generations=1), sandbox=sandbox)
    assert summary.evaluated == 1 and summary.stop_reason == "generations" and server.remaining() == 0
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    first, second = archive.all()
    assert (first.status, first.failed_check, first.proposer) == ("rejected", "shape", "llm")
    assert second.repair_of == first.id and second.parent_ids == [first.id] and second.operator == "llm-repair"
    assert second.status == "evaluated" and second.fitness is not None and second.generation == 1
    assert second.thought.startswith("The .mean() collapsed the batch")
    assert second.reflection == "The repaired loss trains well; keep per-pair losses."
    repair_prompt = server.chat_requests[1].prompt_text()
    assert REPAIR in repair_prompt and "returned a scalar" in repair_prompt and ".mean()" in repair_prompt
    assert archive.get_meta(LLM_BUDGET_META)["calls"] == 3
    kinds = [e["kind"] for e in events_of(tmp_path)]
    assert kinds.count("llm_call") == 3 and "token" in kinds and "error" not in kinds


def test_a_dollar_budget_stops_the_run_and_a_larger_one_continues_it(tmp_path, tiny_run_config, sandbox) -> None:
    prices = {"models": {"fake-model": {"input": 10.0, "output": 0.0}}}  # 1,000 prompt tokens: $0.01 a call
    cost = {"prompt_tokens": 1000, "completion_tokens": 0}
    script = [
        proposal("smooth_sigmoid", SIGMOID_CODE, **cost), reflection("First one scored.", **cost),
        proposal("ipo_variant", library_code("ipo"), **cost), reflection("Second one scored.", **cost),
        proposal("slic_variant", library_code("slic"), **cost), reflection("Third one scored.", **cost),
    ]
    with FakeServer(script) as server:
        # 1. $0.015: the proposal ($0.01) leaves room for its reflection ($0.02), then the budget stops the run
        first = run_search(tmp_path, llm_config(tiny_run_config, server, generations=3, budget={"max_usd": 0.015},
                                                prices=prices), sandbox=sandbox)
        assert first.evaluated == 1 and first.stop_reason.startswith("LLM budget exhausted: $0.0200 spent")
        assert len(server.chat_requests) == 2
        archive = Archive(tmp_path / "archive.sqlite", readonly=True)
        assert archive.get_meta(LLM_BUDGET_META)["usd"] == pytest.approx(0.02)
        archive.close()

        # 2. the same budget again: stops before any call, nothing changes
        again = run_search(tmp_path, llm_config(tiny_run_config, server, generations=3, budget={"max_usd": 0.015},
                                                prices=prices), sandbox=sandbox)
        assert again.evaluated == 1 and again.stop_reason.startswith("LLM budget exhausted")
        assert len(server.chat_requests) == 2

        # 3. a larger budget: the same search goes on, two more, the spending carried over
        offset = (tmp_path / "events.jsonl").stat().st_size
        third = run_search(tmp_path, llm_config(tiny_run_config, server, generations=2, budget={"max_usd": 1.0},
                                                prices=prices), sandbox=sandbox)
    assert third.evaluated_before == 1 and third.evaluated == 3 and third.stop_reason == "generations"
    assert len(server.chat_requests) == 6 and server.remaining() == 0
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    candidates = archive.all()
    assert [(c.step, c.name, c.generation) for c in candidates] == [
        (0, "smooth_sigmoid", 1), (1, "ipo_variant", 2), (2, "slic_variant", 3)]
    spent = archive.get_meta(LLM_BUDGET_META)
    assert spent["calls"] == 6 and spent["usd"] == pytest.approx(0.06)
    with (tmp_path / "events.jsonl").open("rb") as handle:
        handle.seek(offset)
        later = [json.loads(line) for line in handle.read().splitlines() if line.strip()]
    calls = [e for e in later if e["kind"] == "llm_call"]
    assert calls[0]["budget"]["usd"] == pytest.approx(0.03) and calls[0]["budget"]["max_usd"] == 1.0
    screened = {e["candidate_id"] for e in later if e["kind"] == "screen_started"}
    assert screened == {candidates[1].id, candidates[2].id}  # the first candidate is not screened again
    assert [e["kind"] for e in later if e["kind"].startswith("run_")] == ["run_started", "run_stopped"]


def test_a_budget_spent_before_a_repair_stops_without_a_failed_proposal(tmp_path, tiny_run_config, sandbox) -> None:
    with FakeServer([proposal("scalar_loss", SCALAR_CODE), proposal("smooth_sigmoid", SIGMOID_CODE, match=REPAIR)]) as server:
        summary = run_search(tmp_path, llm_config(tiny_run_config, server, generations=1, budget={"max_calls": 1}),
                             sandbox=sandbox)
    assert summary.evaluated == 0 and summary.stop_reason == "LLM budget exhausted: 1 calls made, limit 1"
    assert len(server.chat_requests) == 1
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    (only,) = archive.all()
    assert only.status == "rejected" and only.reflection.startswith("Rejected at check 'shape'")
    assert "error" not in {e["kind"] for e in events_of(tmp_path)}


def test_lossforge_run_survives_a_429_and_garbage_and_never_writes_the_key(tmp_path, cache_dir) -> None:
    script = [
        {"kind": "rate_limit", "retry_after": 0.01, "match": PROPOSE},
        proposal("smooth_sigmoid", SIGMOID_CODE, "Add a squared softplus."),
        {"kind": "garbage", "body": "<html>502 Bad Gateway from a proxy</html>", "match": PROPOSE},
        proposal("ipo_variant", library_code("ipo"), "A squared margin."),
        reflection("The squared softplus helped a little."),
        reflection("IPO-like losses hold the KL down."),
    ]
    run_dir = tmp_path / "run"
    config = tmp_path / "llm.toml"
    with FakeServer(script) as server:
        config.write_text(tiny_config_toml(cache_dir, generations=2) + (
            f'\n[proposer]\nkind = "llm"\n\n[proposer.llm]\nbase_url = "{server.base_url}"\n'
            f'api_key_env = "{KEY_ENV}"\nmax_retries = 2\nmodels = [{{name = "fake-model"}}]\n'
            '[proposer.llm.budget]\nmax_calls = 50\n'
        ))
        done = subprocess.run(
            [sys.executable, "-m", "lossforge.cli", "run", "--run-dir", str(run_dir), "--config", str(config), "--jsonl"],
            capture_output=True, text=True, timeout=300, env={**os.environ, KEY_ENV: KEY},
        )
        (run_dir / "run.log").write_text(done.stdout + done.stderr)  # the logs are part of what is searched
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.remaining() == 0
    # the key was sent (to the server, as a header), and nowhere else
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.chat_requests)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"archive.sqlite", "checkpoints.sqlite", "events.jsonl", "config.json", "run.log"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and b"DISTINCTIVE" not in data, path
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events and KEY not in json.dumps(events)
    assert json.loads((run_dir / "config.json").read_text())["proposer"]["llm"]["api_key_env"] == KEY_ENV

    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    statuses = [(c.name, c.status) for c in archive.all()]
    assert statuses == [("smooth_sigmoid", "evaluated"), ("failed-proposal", "failed"), ("ipo_variant", "evaluated")]
    failed = archive.all()[1]
    assert "502 Bad Gateway from a proxy" in failed.thought and "unreadable answer" in failed.error
    assert archive.all()[0].reflection == "The squared softplus helped a little."
    assert archive.get_meta(LLM_BUDGET_META)["calls"] == 5  # the 429 was retried inside one call
    assert len(server.chat_requests) == 6
    assert {"token", "llm_call", "error"} <= {e["kind"] for e in events}


def test_a_reasoning_model_with_a_cut_off_answer_in_a_real_search(tmp_path, tiny_run_config, sandbox) -> None:
    """Item 7 and 8 of issue 14 through the real search: a draft inside `<think>` is not the candidate, a
    reasoning field is kept apart, and an answer cut off at the token limit is asked again, larger."""
    draft = answer("scalar_loss", SCALAR_CODE, "Average the DPO loss over the batch.")
    thinking = f"A first draft:\n```json\n{draft}\n```\nNo: the .mean() collapses the batch; one loss per pair."
    final = answer("smooth_sigmoid", SIGMOID_CODE, "One loss per pair.")
    ipo = answer("ipo_variant", library_code("ipo"), "A squared margin.")
    field = "IPO regresses the margin to 1/(2 beta); the answer must be a JSON object {thought, name, code}."
    limit = len(ipo.split()) + len(field.split()) - 5  # too small for the second answer, twice it is enough
    script = [
        {"match": PROPOSE, "text": f"<think>\n{thinking}\n</think>\n\n{final}"},
        {"match": PROPOSE, "text": ipo, "reasoning": field, "cut_to_max_tokens": True},
        {"match": PROPOSE, "text": ipo, "reasoning": field, "cut_to_max_tokens": True},
        reflection("Per-pair losses train."), reflection("The squared margin holds the KL down."),
    ]
    with FakeServer(script) as server:
        config = llm_config(tiny_run_config, server, generations=2)
        config.proposer.llm.models[0].max_tokens = limit
        summary = run_search(tmp_path, config, sandbox=sandbox)
    assert summary.evaluated == 2 and server.remaining() == 0
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    first, second = archive.all()  # no candidate from the draft, no failed proposal from the cut-off answer
    assert (first.name, first.status, first.code, first.repair_of) == ("smooth_sigmoid", "evaluated", SIGMOID_CODE.strip("\n"), None)
    assert first.thought.startswith("One loss per pair.\n\nModel reasoning") and "A first draft" in first.thought
    assert (second.name, second.status) == ("ipo_variant", "evaluated") and field in second.thought
    sent = [r.body["max_tokens"] for r in server.chat_requests if PROPOSE in r.prompt_text()]
    assert sent == [limit, limit, 2 * limit]
    assert "was cut off at the limit of" in server.chat_requests[-2].prompt_text()

    events = events_of(tmp_path)
    shown = [e for e in events if e["kind"] == "reasoning"]
    assert [(e["purpose"], e["step"]) for e in shown] == [("propose", 0), ("propose", 1), ("propose", 1)]
    assert shown[0]["text"] == thinking.strip() and shown[2]["text"] == field
    (cut,) = [e for e in events if e["kind"] == "truncated"]
    assert (cut["step"], cut["max_tokens"], cut["retry_max_tokens"]) == (1, limit, 2 * limit)
    assert "cut off at the token limit" in cut["message"]
    reasoning_tokens = "".join(e["text"] for e in events if e["kind"] == "token" and e["channel"] == "reasoning")
    assert "A first draft" in reasoning_tokens and field in reasoning_tokens  # streamed to the TUI's pane
    proposals = [e for e in events if e["kind"] == "proposal"]
    assert [p["name"] for p in proposals] == ["smooth_sigmoid", "ipo_variant"] and "error" not in {e["kind"] for e in events}
    assert archive.get_meta(LLM_BUDGET_META)["calls"] == 5  # the cut-off try is charged
