"""`rundir.in_flight`: the candidates in flight resolved from a real archive, one per stage.

The archive is written by hand (real SQLite, the supervisor's meta key) with one walk at each stage, a
repaired walk (resolved to its latest repair), a training job that outlived its walk, and a finished
candidate that is in flight no more.
"""
from __future__ import annotations

import pytest

from lossforge.rundir.archive import Archive
from lossforge.rundir.in_flight import IN_FLIGHT_META, InFlight, Stage, in_flight, stage_of


def _row(archive: Archive, step: int, name: str, status: str, proposer: str = "evolution", **fields) -> int:
    candidate_id = archive.upsert_proposal(step, name=name, code="def f(): pass", code_hash=name, proposer=proposer)
    archive.update(candidate_id, status=status, **fields)
    return candidate_id


@pytest.fixture
def archive(tmp_path) -> Archive:
    archive = Archive(tmp_path / "archive.sqlite")
    yield archive
    archive.close()


def test_nothing_in_flight_is_an_empty_list(archive) -> None:
    assert in_flight(archive) == []  # no meta: a run that never dispatched
    _row(archive, 0, "done", "evaluated", fitness=1.0, reflection="ok")
    archive.set_meta(IN_FLIGHT_META, [])
    assert in_flight(archive) == []


def test_each_walk_resolves_to_its_latest_candidate_and_stage(archive) -> None:
    _row(archive, 0, "finished", "evaluated", fitness=1.0, reflection="ok")  # not in flight
    checking = _row(archive, 1, "being_checked", "checking")
    proposed = _row(archive, 2, "just_proposed", "proposed")
    checked = _row(archive, 3, "to_dedup", "checked")
    screening = _row(archive, 4, "on_the_proxy", "screening")
    rejected = _row(archive, 5, "scalar", "rejected", proposer="llm")
    repair = _row(archive, 9, "scalar_fixed", "screening", proposer="llm", repair_of=rejected)
    training = _row(archive, 6, "promoted", "evaluated", fitness=1.2,
                    result={"train": {"status": "running", "job_id": "job-6"}})
    trained = _row(archive, 7, "trained", "evaluated", fitness=1.1,
                   result={"train": {"status": "succeeded", "job_id": "job-7"}})
    duplicate = _row(archive, 8, "twin", "duplicate", duplicate_of=1)
    rejected_gp = _row(archive, 10, "gp_bad", "rejected")
    reflected = _row(archive, 11, "about_to_leave", "failed", reflection="failed")
    background = _row(archive, 12, "job_still_running", "evaluated", fitness=1.3, reflection="ok",
                      result={"train": {"status": "queued", "job_id": "job-12"}})
    archive.set_meta(IN_FLIGHT_META, [13, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11])

    got = in_flight(archive)
    assert [(f.slot, f.step, f.candidate_id, f.stage) for f in got] == [
        (13, 13, None, Stage.PROPOSING),
        (1, 1, checking, Stage.CHECKING),
        (2, 2, proposed, Stage.CHECKING),
        (3, 3, checked, Stage.DEDUPLICATING),
        (4, 4, screening, Stage.SCREENING),
        (5, 9, repair, Stage.SCREENING),  # the walk of step 5 is at its repair (step 9)
        (6, 6, training, Stage.TRAINING),
        (7, 7, trained, Stage.REFLECTING),
        (8, 8, duplicate, Stage.REFLECTING),
        (10, 10, rejected_gp, Stage.REFLECTING),
        (11, 11, reflected, Stage.FINISHING),
        (None, 12, background, Stage.TRAINING),  # a job that outlived its walk
    ]
    assert got[0].label() == "step 13 proposing"
    assert got[6].label() == f"#{training} promoted training (job running)"
    assert (got[6].job_id, got[6].job_status) == ("job-6", "running")
    public = got[5].public()
    assert public == {"slot": 5, "step": 9, "stage": "screening", "candidate_id": repair, "name": "scalar_fixed",
                      "status": "screening", "job_id": None, "job_status": None}
    assert in_flight(archive, archive.all()) == got  # the caller's rows give the same answer


def test_a_rejected_llm_candidate_awaits_its_repair(archive) -> None:
    rejected = _row(archive, 0, "scalar", "rejected", proposer="llm")
    archive.set_meta(IN_FLIGHT_META, [0])
    assert in_flight(archive) == [InFlight(slot=0, step=0, stage=Stage.REPAIRING, candidate_id=rejected,
                                           name="scalar", status="rejected")]
    assert stage_of(None) == Stage.PROPOSING


def test_a_read_only_archive_reads_what_the_run_writes(archive, tmp_path) -> None:
    reader = Archive(tmp_path / "archive.sqlite", readonly=True)
    try:
        archive.set_meta(IN_FLIGHT_META, [0])
        assert [f.stage for f in in_flight(reader)] == [Stage.PROPOSING]
        candidate_id = _row(archive, 0, "new", "screening")
        assert [(f.candidate_id, f.stage) for f in in_flight(reader)] == [(candidate_id, Stage.SCREENING)]
    finally:
        reader.close()


def test_a_meta_that_is_not_a_list_of_steps_is_refused(archive) -> None:
    archive.set_meta(IN_FLIGHT_META, {"slots": [1]})
    with pytest.raises(ValueError, match="list of step numbers"):
        in_flight(archive)
