"""The TUI driven with Pilot on a real search (tiny proxy), in run and attach modes."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lossforge.rundir.archive import Archive
from lossforge.proposers.base import Proposal
from lossforge.trainer.losses import library_code
from lossforge.tui.app import LossforgeApp
from lossforge.tui.screens import ConfirmStop, HintInput
from lossforge.tui.widgets.candidates import CandidatesTable
from tests.conftest import tiny_config_toml

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

BACKWARDS = """
import torch.nn.functional as F

def backwards(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return F.softplus(beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)))
"""


class Script:
    def __init__(self, proposals: list[Proposal]) -> None:
        self.proposals = proposals

    def propose(self, context):
        return self.proposals[min(context.step, len(self.proposals) - 1)]


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the UI"
        await pilot.pause(0.2)


def table_statuses(app: LossforgeApp) -> list[str]:
    table = app.query_one(CandidatesTable)
    return [str(table.get_row(key)[3]) for key in table.rows]


async def test_a_search_fills_the_table_and_a_rejection_shows_its_check(tmp_path, tiny_run_config) -> None:
    proposer = Script(
        [
            Proposal(thought="the baseline", name="dpo", code=library_code("dpo")),
            Proposal(thought="wrong way round", name="backwards", code=BACKWARDS),
            Proposal(thought="a second real one", name="ipo", code=library_code("ipo")),
        ]
    )
    config = tiny_run_config.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 2})})
    app = LossforgeApp(tmp_path, config=config, proposer=proposer)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.finished is not None and table_statuses(app).count("judged") == 2)
        statuses = table_statuses(app)
        assert statuses.count("judged") == 2
        assert "rejected (prefers_chosen)" in statuses
        # select the rejected candidate: its failed check is in the detail pane
        table = app.query_one(CandidatesTable)
        table.move_cursor(row=statuses.index("rejected (prefers_chosen)"))
        await pilot.pause(0.3)
        report = str(app.query_one("#detail-report").render())
        assert "FAIL prefers_chosen" in report
        # the plot shows the selected loss next to DPO's
        shown = table.selected_id()
        await wait_for(pilot, lambda: shown in app._curves)
        assert app._shown_id == shown and app._curves[shown] is not None
        assert len(app._curves[shown]["value"]) == len(app._dpo_curve["value"])


async def test_pause_hint_and_stop_act_on_the_search(tmp_path, tiny_run_config) -> None:
    config = tiny_run_config.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 50})})
    app = LossforgeApp(tmp_path, config=config)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: "judged" in table_statuses(app))
        await pilot.press("p")
        assert not app.running.is_set()
        await pilot.press("p")
        assert app.running.is_set()
        await pilot.press("h")
        assert isinstance(app.screen, HintInput)
        await pilot.press(*"try tanh", "enter")
        await pilot.pause(0.2)
        steering = Archive(tmp_path / "archive.sqlite", readonly=True).get_meta("steering")
        assert steering["hints"] == ["try tanh"]
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmStop)
        await pilot.press("y")
        assert app.stop_event.is_set()
        await wait_for(pilot, lambda: app.finished is not None)
        assert app.finished["stop_reason"] == "stop requested"
        assert app.finished["evaluated"] < 50


async def test_attach_follows_a_run_started_by_lossforge_run_in_another_process(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=3))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lossforge.cli", "run", "--run-dir", str(run_dir), "--config", str(config), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        app = LossforgeApp(run_dir, attach=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: table_statuses(app).count("judged") == 3, timeout=240)
            assert app.finished is not None
            await pilot.press("p")  # controls are refused in attach mode: the run is not disturbed
            assert app.running.is_set()
    finally:
        process.wait(timeout=240)
    assert process.returncode == 0
