"""The archive: a real SQLite file, idempotent upserts, readable from another connection while written."""
from __future__ import annotations

import sqlite3

import pytest

from lossforge.rundir.archive import Archive


def _propose(archive: Archive, step: int, name: str = "x") -> int:
    return archive.upsert_proposal(step, name=name, code=f"def f(): pass  # {step}", code_hash=str(step), genome=["rho"])


def test_upsert_of_the_same_step_rewrites_one_row(tmp_path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    first = _propose(archive, 0, "a")
    again = _propose(archive, 0, "b")
    assert first == again
    assert [c.name for c in archive.all()] == ["b"]
    assert archive.get(first).genome == ["rho"]


def test_counts_top_and_recent(tmp_path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    ids = [_propose(archive, step) for step in range(4)]
    archive.update(ids[0], status="evaluated", fitness=0.5, generation=1)
    archive.update(ids[1], status="rejected", failed_check="shape")
    archive.update(ids[2], status="evaluated", fitness=0.9, generation=2)
    archive.update(ids[3], status="degenerate", error="non-finite loss at step 3", generation=3)
    assert archive.count_evaluated() == 3
    assert [c.id for c in archive.top(5)] == [ids[2], ids[0]]
    assert archive.counts() == {"evaluated": 2, "rejected": 1, "degenerate": 1}
    assert [c.id for c in archive.recent(2, statuses=("rejected",))] == [ids[1]]


def test_a_reader_sees_writes_and_cannot_write(tmp_path) -> None:
    writer = Archive(tmp_path / "archive.sqlite")
    reader = Archive(tmp_path / "archive.sqlite", readonly=True)
    candidate_id = _propose(writer, 0)
    writer.update(candidate_id, status="evaluated", fitness=1.25, check_report={"passed": True})
    seen = reader.get(candidate_id)
    assert seen.fitness == 1.25 and seen.check_report == {"passed": True}
    with pytest.raises(sqlite3.OperationalError):
        reader.update(candidate_id, fitness=0.0)


def test_readonly_open_of_a_missing_archive_says_what_is_wrong(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="run directory"):
        Archive(tmp_path / "nope" / "archive.sqlite", readonly=True)


def test_meta_round_trips_json(tmp_path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    archive.set_meta("steering", {"hints": ["try tanh"], "pinned": [3]})
    assert archive.get_meta("steering") == {"hints": ["try tanh"], "pinned": [3]}
    assert archive.get_meta("absent", 7) == 7
