"""The budget gauges: the figures they show, how they are drawn, and the attach view fed from a run's files.

The drawing tests need no app. The attach test runs the app on the snapshot run (an LLM run part way
through its budget) under NO_COLOR at 80x24 (the one-line strip), then at 160x48 (the gauges panel) in
the light theme, and appends an `llm_call` event to see the gauges follow it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lossforge.tui.budget import BudgetFigures, Meter, format_value
from lossforge.tui.widgets.gauges import EMPTY, FULL, UNBOUNDED, UNKNOWN, Gauge, gauge_line, strip_text


def test_values_are_short_and_fractions_clamped() -> None:
    assert [format_value("usd", v) for v in (0.0412, 0.1, 5.0, 12.5)] == ["$0.041", "$0.100", "$5.00", "$12.50"]
    assert [format_value("tokens", v) for v in (950, 15400, 2_500_000)] == ["950", "15.4k", "2.5M"]
    assert format_value("gpu_hours", 1.5) == "1.50h" and format_value("usd", None) == ""
    assert Meter(0.5, 2.0).fraction == 0.25 and Meter(3.0, 2.0).fraction == 1.0 and Meter(3.0, 2.0).reached
    assert Meter(3.0, None).fraction is None and not Meter(None, 2.0).reached


def test_a_gauge_line_is_drawn_with_glyphs_that_need_no_colour() -> None:
    line = gauge_line("USD", "usd", Meter(0.025, 0.1), width=30)
    assert line.plain == "USD    " + FULL * 2 + EMPTY * 7 + " $0.025/$0.100" and len(line.plain) == 30
    assert gauge_line("tokens", "tokens", Meter(1234, None), 30).plain.endswith(UNBOUNDED * 17 + " 1.23k")
    assert gauge_line("GPU-h", "gpu_hours", Meter(), 30).plain == "GPU-h  " + UNKNOWN * 19 + " n/a"
    # a tiny spend still shows, and only a reached spending limit is red (not a reached generation target)
    assert gauge_line("calls", "calls", Meter(1, 500), 30).plain.count(FULL) == 1
    spent = gauge_line("USD", "usd", Meter(0.2, 0.1), 30)
    assert FULL * 9 + " " in spent.plain and EMPTY not in spent.plain and any("red" in str(span.style) for span in spent.spans)
    done = gauge_line("gen", "generations", Meter(3, 3), 30)
    assert not any("red" in str(span.style) for span in done.spans) and "red" not in str(done.style)
    assert gauge_line("USD", "usd", Meter(0.02, 0.1), 12).plain == "USD    $0.02"  # no room: the value, cut


def test_the_figures_follow_events_and_the_saved_state() -> None:
    figures = BudgetFigures()
    figures.set_llm_limits({"max_usd": 5.0, "max_tokens": None, "max_calls": 100})
    figures.set_llm_spent({"calls": 3, "prompt_tokens": 900, "completion_tokens": 100, "usd": 0.5})
    assert (figures.usd.spent, figures.usd.limit, figures.tokens.spent, figures.calls.spent) == (0.5, 5.0, 1000, 3)
    figures.from_llm_summary({"calls": 4, "tokens": 1500, "usd": 0.7, "max_calls": 100, "max_tokens": 2000,
                              "max_usd": 5.0, "exhausted": None})
    assert (figures.tokens.spent, figures.tokens.limit, figures.calls.spent) == (1500, 2000, 4)
    figures.from_budget_event({"kind": "budget", "gpu_hours": 0.25, "max_gpu_hours": 2})
    figures.set_generations(2, 5)
    strip = strip_text(figures, 200).plain
    assert strip.startswith("gen ") and "2/5" in strip and "$0.700/$5.00" in strip and "1.5k/2k" in strip
    assert "0.25h/2.00h" in strip and "calls" not in strip
    assert strip_text(BudgetFigures(), 80).plain.startswith("gen " + UNKNOWN * 6 + " n/a")  # nothing else yet
    assert "USD" not in strip_text(BudgetFigures(), 80).plain
    assert len(strip_text(figures, 40).plain) == 40


def test_gpu_hours_come_from_the_training_jobs_wall_time() -> None:
    figures = BudgetFigures()
    figures.set_training_seconds(0.0)  # nothing trained: not reported
    assert gauge_line("GPU-h", "gpu_hours", figures.gpu_hours, 30).plain.endswith(" n/a")
    figures.set_training_seconds(5400.0)
    assert figures.gpu_hours.spent == 1.5 and figures.gpu_hours.limit is None
    assert gauge_line("GPU-h", "gpu_hours", figures.gpu_hours, 30).plain.endswith(UNBOUNDED + " 1.50h")


@pytest.mark.slow
@pytest.mark.anyio
async def test_attached_gauges_read_the_run_and_follow_its_events(tmp_path, monkeypatch) -> None:
    from lossforge.tui.app import LossforgeApp
    from lossforge.tui.widgets.gauges import BudgetStrip
    from tests.tui.test_snapshots import make_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    make_run(run_dir)
    monkeypatch.setenv("NO_COLOR", "1")
    app = LossforgeApp(run_dir, attach=True)
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: app.budget.generations.spent == 2)
        assert (app.budget.usd.spent, app.budget.usd.limit) == (0.0412, 0.1)
        assert (app.budget.tokens.spent, app.budget.tokens.limit, app.budget.calls.limit) == (15400, 50000, 100)
        strip = app.query_one(BudgetStrip)
        assert strip.display and not app.query_one("#charts").display
        shown = str(strip.render())
        assert "gen" in shown and "$0.041/$0.100" in shown and "15.4k/50k" in shown and FULL in shown and EMPTY in shown

        _append(run_dir, {"kind": "llm_call", "purpose": "propose", "step": 4, "model": "gpt-4o-mini", "usd": 0.05,
                          "budget": {"calls": 7, "tokens": 16400, "usd": 0.1012, "max_calls": 100, "max_tokens": 50000,
                                     "max_usd": 0.1, "exhausted": "$0.1012 spent, limit $0.1000"}})
        await _until(pilot, lambda: app.budget.calls.spent == 7)
        assert app.budget.usd.reached and "$0.101/$0.100" in str(strip.render())

        await pilot.resize_terminal(160, 48)
        await pilot.press("t")
        await pilot.pause(0.5)
        assert app.theme == "textual-light" and not strip.display and app.query_one("#charts").display
        assert str(app.query_one("#gauge-usd", Gauge).render()).endswith("$0.101/$0.100")
        assert str(app.query_one("#gauge-gpu_hours", Gauge).render()).endswith("n/a")
        screenshot = app.export_screenshot()
        assert "budgets" in screenshot and "tokens" in screenshot and FULL in screenshot


async def _until(pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the UI"
        await pilot.pause(0.1)


def _append(run_dir: Path, event: dict) -> None:
    with (run_dir / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"time": 1, **event}) + "\n")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
