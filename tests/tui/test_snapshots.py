"""Snapshots of the main screen at 80x24 and 160x48, attached to a fixed, hand-written run.

The run is an LLM run part way through its budget (the spending in the archive's meta, the limits in its
`config.json`), so the gauges show generations, USD, tokens and calls, and GPU-hours as not reported.

Update after an intended change of the layout: `pytest tests/tui/test_snapshots.py --snapshot-update`,
then look at the SVGs in tests/tui/__snapshots__/.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossforge.rundir.archive import Archive
from lossforge.config import RunConfig
from lossforge.trainer.losses import library_code
from lossforge.tui.app import LossforgeApp

pytestmark = pytest.mark.slow

BACKWARDS = library_code("dpo").replace("-F.logsigmoid", "F.logsigmoid")


def make_run(run_dir: Path) -> None:
    """A finished run with fixed values: two evaluated losses, one rejected, one duplicate."""
    archive = Archive(run_dir / "archive.sqlite")
    path = [{"step": 48, "kl": 0.4, "reward_gain": 0.7, "train_loss": 0.6}, {"step": 96, "kl": 1.2, "reward_gain": 1.1, "train_loss": 0.5}]
    rows = [
        ("dpo", library_code("dpo"), "evaluated", 1.0655, None, None, "First evaluated loss: it sets the bar."),
        ("backwards", BACKWARDS, "rejected", None, "prefers_chosen", None, "Rejected at check 'prefers_chosen'."),
        ("ipo_like", library_code("ipo"), "evaluated", 1.0992, None, None, "New best: fitness 1.099 (+0.034)."),
        ("dpo_again", library_code("dpo"), "duplicate", None, None, 1, "Behaves like #1."),
    ]
    generation = 0
    for step, (name, code, status, fitness, failed, duplicate_of, reflection) in enumerate(rows):
        candidate_id = archive.upsert_proposal(step, name=name, code=code, code_hash=str(step), thought=f"proposal {name}", operator="seed")
        checks = [{"name": "policy", "passed": True}, {"name": "prefers_chosen", "passed": failed is None, "evidence": "" if failed is None else "mean loss at margin +1 is 1.31, at -1 is 0.31", "hint": "" if failed is None else "the loss must fall as the chosen answer gains"}]
        fields = dict(status=status, check_report={"passed": failed is None, "checks": checks}, failed_check=failed, duplicate_of=duplicate_of, reflection=reflection, timings={"check": 0.02, "screen": 6.1 if fitness else 0.0})
        if fitness is not None:
            generation += 1
            fields.update(fitness=fitness, generation=generation, result={"path": path, "final_kl": 1.2, "beta": 0.1, "kl_budget": 1.0})
        archive.update(candidate_id, **fields)
    archive.set_meta("llm_budget", {"calls": 6, "prompt_tokens": 12000, "completion_tokens": 3400, "usd": 0.0412,
                                     "estimated_calls": 0, "by_model": {}})
    archive.close()
    config = RunConfig.model_validate({"proposer": {"kind": "llm", "llm": {
        "models": [{"name": "gpt-4o-mini"}], "prices": {"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}},
        "budget": {"max_usd": 0.1, "max_tokens": 50000, "max_calls": 100}}}})
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    events = [
        {"kind": "run_started", "evaluated": 0, "target": 2},
        {"kind": "proposal", "candidate_id": 1, "name": "dpo", "operator": "seed", "thought": "Seed 1: the library loss dpo, softplus(-rho)."},
        {"kind": "evaluated", "candidate_id": 1, "name": "dpo", "status": "evaluated", "fitness": 1.0655},
        {"kind": "check", "candidate_id": 2, "name": "backwards", "passed": False, "summary": "failed check 'prefers_chosen'"},
        {"kind": "reflection", "candidate_id": 2, "text": "Rejected at check 'prefers_chosen'."},
        {"kind": "evaluated", "candidate_id": 3, "name": "ipo_like", "status": "evaluated", "fitness": 1.0992},
        {"kind": "run_stopped", "evaluated": 2, "stop_reason": "generations"},
    ]
    (run_dir / "events.jsonl").write_text("".join(json.dumps({"time": 0, **e}) + "\n" for e in events))


async def _ready(pilot) -> None:
    app = pilot.app
    for _ in range(200):
        if app._shown_id is not None and app._shown_id in app._curves and app.finished is not None:
            break
        await pilot.pause(0.1)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_main_screen(snap_compare, tmp_path, monkeypatch, size) -> None:
    monkeypatch.chdir(tmp_path)  # a relative run directory: the title is the same on every machine
    run_dir = Path("run")
    run_dir.mkdir()
    make_run(run_dir)
    app = LossforgeApp(run_dir, attach=True)
    assert snap_compare(app, terminal_size=size, run_before=_ready)
