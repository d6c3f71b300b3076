"""The TUI's in-flight line: the drawing, and an attached app following a run's walks as they move.

The attached run is written by hand into a real archive (the supervisor's meta ``in_flight``, rows at
their stages) and its ``events.jsonl``; each appended event refreshes the view, as a live run's do.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lossforge.rundir.archive import Archive
from lossforge.rundir.in_flight import IN_FLIGHT_META, InFlight, Stage
from lossforge.tui.app import LossforgeApp
from lossforge.tui.widgets.in_flight import InFlightBar, flight_text


def test_flight_text_lists_each_walk_and_fits_the_width() -> None:
    entries = [InFlight(slot=4, step=4, stage=Stage.SCREENING, candidate_id=5, name="smooth", status="screening"),
               InFlight(slot=6, step=6, stage=Stage.PROPOSING),
               InFlight(slot=None, step=2, stage=Stage.TRAINING, candidate_id=3, name="ipo", status="evaluated",
                        job_id="j", job_status="running")]
    assert flight_text(entries, 200).plain == "in flight 3: #5 smooth screening │ step 6 proposing │ #3 ipo training (job running)"
    short = flight_text(entries, 30).plain
    assert len(short) == 30 and short.endswith("…")
    assert flight_text([], 80).plain == ""


async def _wait(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the UI"
        await pilot.pause(0.1)


def _event(run_dir: Path, **event) -> None:
    with (run_dir / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"time": time.time(), **event}) + "\n")


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_attached_tui_shows_the_walks_in_flight_and_hides_the_line_when_none_is(tmp_path, anyio_backend) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    first = archive.upsert_proposal(0, name="smooth", code="x", code_hash="a")
    archive.update(first, status="screening")
    archive.set_meta(IN_FLIGHT_META, [0, 1])
    _event(tmp_path, kind="run_started", evaluated=0, target=2)
    _event(tmp_path, kind="screen_started", candidate_id=first, name="smooth")
    app = LossforgeApp(tmp_path, attach=True)
    async with app.run_test(size=(160, 48)) as pilot:
        bar = app.query_one(InFlightBar)
        await _wait(pilot, lambda: bar.display and len(bar.entries) == 2)
        assert [(e.candidate_id, e.stage) for e in bar.entries] == [(first, Stage.SCREENING), (None, Stage.PROPOSING)]
        assert "#1 smooth screening │ step 1 proposing" in flight_text(bar.entries, 160).plain

        second = archive.upsert_proposal(1, name="ipo", code="y", code_hash="b")  # the second walk proposed
        _event(tmp_path, kind="proposal", candidate_id=second, name="ipo", step=1)
        await _wait(pilot, lambda: [e.stage for e in bar.entries] == [Stage.SCREENING, Stage.CHECKING])

        archive.update(first, status="evaluated", fitness=1.0, generation=1, reflection="ok")
        archive.update(second, status="evaluated", fitness=0.9, generation=2, reflection="ok")
        archive.set_meta(IN_FLIGHT_META, [])
        _event(tmp_path, kind="run_stopped", evaluated=2, stop_reason="generations")
        await _wait(pilot, lambda: not bar.display and bar.entries == [])
    archive.close()
