"""The TUI on a search whose proposer is the LLM (the fake OpenAI server), driven with Pilot.

The scripted proposal is held by the server half way through its stream, so the test sees the reasoning
pane showing a half-written answer (no timing involved), then lets it finish and watches the table
fill and the budget gauges count the calls.
"""
from __future__ import annotations

import json
import time

import pytest

from lossforge.config import RunConfig
from lossforge.llm.fake_server import FakeServer
from lossforge.trainer.losses import library_code
from lossforge.tui.app import LossforgeApp
from lossforge.tui.widgets.candidates import CandidatesTable
from lossforge.tui.widgets.gauges import Gauge
from lossforge.tui.widgets.logs import ReasoningView

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

KEY_ENV = "LOSSFORGE_TUI_TEST_KEY"
THOUGHT = "Streamed-marker idea: a squared margin keeps the policy close to the reference while it learns."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wait_for(pilot, condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the UI"
        await pilot.pause(0.1)


def statuses(app: LossforgeApp) -> list[str]:
    table = app.query_one(CandidatesTable)
    return [str(table.get_row(key)[3]) for key in table.rows]


async def test_the_reasoning_pane_streams_the_llms_answer_and_the_gauges_count_it(tmp_path, tiny_run_config, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-tui-test")
    cost = {"prompt_tokens": 1000, "completion_tokens": 0}  # $0.01 a call at the price below
    script = [
        {"match": "This is proposal", "hold_after": 8, **cost,
         "text": json.dumps({"thought": THOUGHT, "name": "ipo_variant", "code": library_code("ipo")})},
        {"match": "Your reflection", "text": "The squared margin scored well; try a softer one next.", **cost},
    ]
    with FakeServer(script) as server:
        data = tiny_run_config.model_dump(mode="json")
        data["search"]["generations"] = 1
        data["proposer"] = {"kind": "llm", "llm": {
            "base_url": server.base_url, "api_key_env": KEY_ENV, "max_retries": 1, "timeout": 60,
            "models": [{"name": "fake-model"}], "prices": {"models": {"fake-model": {"input": 10.0, "output": 0.0}}},
            "budget": {"max_usd": 1.0, "max_calls": 20}}}
        app = LossforgeApp(tmp_path, config=RunConfig.model_validate(data))
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                reasoning = app.query_one(ReasoningView)
                await wait_for(pilot, lambda: "Streamed-marker" in reasoning.streaming)
                # half an answer: the server holds the rest, no proposal exists yet
                assert reasoning.stream_key == ("propose", 0, "fake-model")
                assert '"code"' not in reasoning.streaming and not app.candidates
                await pilot.pause(0.2)
                shown = str(app.query_one("#reasoning-stream").render())
                assert "streaming (propose step 0 fake-model)" in shown and "Streamed-marker idea" in shown
                assert app.budget.usd.limit == 1.0 and app.budget.usd.spent is None  # nothing charged yet

                server.release()
                await wait_for(pilot, lambda: app.finished is not None and statuses(app) == ["judged"])
                await wait_for(pilot, lambda: app.budget.calls.spent == 2)
                assert any(THOUGHT in entry for entry in reasoning.entries)  # the proposal replaced the stream
                assert any("try a softer one next" in entry for entry in reasoning.entries)
                assert reasoning.streaming == ""
                assert app.budget.usd.spent == pytest.approx(0.02) and app.budget.tokens.spent == 2000
                await pilot.pause(0.2)
                assert str(app.query_one("#gauge-usd", Gauge).render()).endswith("$0.020/$1.00")
                assert str(app.query_one("#gauge-calls", Gauge).render()).endswith("2/20")
                assert str(app.query_one("#gauge-generations", Gauge).render()).endswith("1/1")
        finally:
            server.release()
