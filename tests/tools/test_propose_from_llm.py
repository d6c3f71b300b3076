"""`propose_from` on a run whose proposer is the LLM: it spends the run's own budget, kept in its archive.

The run directory is written by hand (an archive with two candidates and a saved budget, and the
`config.json` a run leaves), so no search runs here; the LLM is the scripted fake server.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossforge.rundir.archive import Archive
from lossforge.rundir.lock import RunLock
from lossforge.rundir.archive import LLM_BUDGET_META
from lossforge.config import RunConfig
from lossforge.llm.fake_server import FakeServer
from lossforge.tools import api
from lossforge.tools.context import ToolContext, ToolError, ToolSettings
from lossforge.trainer.losses import library_code

KEY_ENV = "LOSSFORGE_TOOLS_TEST_KEY"
SAVED = {"calls": 3, "prompt_tokens": 3000, "completion_tokens": 0, "usd": 0.03, "estimated_calls": 0, "by_model": {}}
ANSWER = json.dumps({"thought": "A hinge on the margin.", "name": "hinge_margin", "code": library_code("slic")})


@pytest.fixture
def context() -> ToolContext:
    return ToolContext(ToolSettings(), sandbox=object())  # propose_from never runs code


def make_run(run_dir: Path, base_url: str, max_usd: float) -> None:
    run_dir.mkdir()
    archive = Archive(run_dir / "archive.sqlite")
    for step, name in enumerate(("dpo", "ipo")):
        candidate_id = archive.upsert_proposal(step, name=name, code=library_code(name), code_hash=name,
                                               proposer="llm", status="proposed")
        archive.update(candidate_id, status="evaluated", fitness=1.0 + step / 10, generation=step + 1)
    archive.set_meta(LLM_BUDGET_META, SAVED)
    archive.close()
    config = RunConfig.model_validate({"proposer": {"kind": "llm", "llm": {
        "base_url": base_url, "api_key_env": KEY_ENV, "max_retries": 0, "models": [{"name": "fake-model"}],
        "prices": {"models": {"fake-model": {"input": 10.0, "output": 0.0}}}, "budget": {"max_usd": max_usd}}}})
    (run_dir / "config.json").write_text(config.model_dump_json())


def saved_budget(run_dir: Path) -> dict:
    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    try:
        return archive.get_meta(LLM_BUDGET_META)
    finally:
        archive.close()


def test_it_spends_the_runs_saved_budget_and_adds_to_it(tmp_path, context, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-tools-test")
    with FakeServer([{"text": ANSWER, "prompt_tokens": 1000, "completion_tokens": 0}]) as server:
        make_run(tmp_path / "run", server.base_url, max_usd=0.05)
        result = api.propose_from(str(tmp_path / "run"), hint="try a hinge", context=context)
    assert result.name == "hinge_margin" and result.proposer == "llm" and result.step == 2
    assert "try a hinge" in server.chat_requests[0].prompt_text()
    # the run's fitness reads two betas (the default [proxy.fitness]); the tool tells the LLM as the search does
    assert "the worst (lowest) of the readings at beta 0.05, 0.1" in server.chat_requests[0].prompt_text()
    spent = saved_budget(tmp_path / "run")
    assert spent["calls"] == 4 and spent["usd"] == pytest.approx(0.04)  # $0.03 before, $0.01 this call
    assert [c.name for c in Archive(tmp_path / "run" / "archive.sqlite", readonly=True).all()] == ["dpo", "ipo"]


def test_it_refuses_a_run_whose_budget_is_spent_without_calling_the_model(tmp_path, context, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-tools-test")
    with FakeServer([ANSWER]) as server:
        make_run(tmp_path / "run", server.base_url, max_usd=0.03)
        with pytest.raises(ToolError, match=r"the run's LLM budget is exhausted \(\$0\.0300 spent, limit \$0\.0300\)"):
            api.propose_from(str(tmp_path / "run"), context=context)
    assert server.chat_requests == [] and saved_budget(tmp_path / "run") == SAVED


def test_it_refuses_while_a_search_holds_the_run_and_without_the_key(tmp_path, context, monkeypatch) -> None:
    with FakeServer([ANSWER]) as server:
        make_run(tmp_path / "run", server.base_url, max_usd=1.0)
        with pytest.raises(ToolError, match=f"environment variable {KEY_ENV} is not set"):
            api.propose_from(str(tmp_path / "run"), context=context)
        monkeypatch.setenv(KEY_ENV, "sk-tools-test")
        with RunLock(tmp_path / "run"):
            with pytest.raises(ToolError, match="a search is running in .*try again when it has stopped"):
                api.propose_from(str(tmp_path / "run"), context=context)
    assert server.chat_requests == [] and saved_budget(tmp_path / "run") == SAVED
