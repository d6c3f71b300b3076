"""The proposer's context: bounded, and carrying the user's steering (hints, pins, exclusions)."""
from __future__ import annotations

from lossforge.rundir.archive import Archive
from lossforge.proposers.context import build_context


def test_the_context_is_bounded_whatever_the_archive_size(tmp_path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    for step in range(60):
        candidate_id = archive.upsert_proposal(step, name=f"c{step}", code="x", code_hash=str(step))
        archive.update(candidate_id, status="evaluated", fitness=float(step), generation=step + 1)
    context = build_context(archive, step=60, seed=0, beta=0.1, n_best=5, n_recent=5)
    assert [v.fitness for v in context.best] == [59.0, 58.0, 57.0, 56.0, 55.0]
    assert len(context.recent) == 5 and len(context.failures) == 0


def test_steering_reaches_the_context(tmp_path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    ids = []
    for step in range(3):
        candidate_id = archive.upsert_proposal(step, name=f"c{step}", code="x", code_hash=str(step))
        archive.update(candidate_id, status="evaluated", fitness=float(step), generation=step + 1)
        ids.append(candidate_id)
    rejected = archive.upsert_proposal(3, name="bad", code="y", code_hash="y")
    archive.update(rejected, status="rejected", failed_check="shape", check_report={"passed": False, "checks": [{"name": "shape", "passed": False, "evidence": "got (), expected (3,)", "hint": "return one loss per pair"}]})
    archive.set_meta("steering", {"hints": ["try tanh gates"], "pinned": [ids[0]], "excluded": [ids[2]]})
    context = build_context(archive, step=4, seed=0, beta=0.1, n_best=1)
    assert context.hints == ["try tanh gates"]
    assert ids[0] in [v.id for v in context.best]  # pinned candidates are always shown
    assert context.excluded_ids == [ids[2]]
    assert "shape" in context.failures[0].check_summary and "expected (3,)" in context.failures[0].check_summary
