"""The rejection funnel: one definition, read the same from an archive and from a bench's counts."""
from __future__ import annotations

from lossforge.bench.discovery.search import _funnel, funnel_fractions
from lossforge.candidate.status import CandidateStatus as S
from lossforge.report.run import funnel_counts
from lossforge.rundir.archive import Archive
from lossforge.rundir.funnel import Funnel


def _archive(tmp_path) -> Archive:
    archive = Archive(tmp_path / "archive.sqlite")
    rows = [  # (name, code, status, failed_check, fitness)
        ("failed-proposal", "", S.FAILED, None, None),
        ("broken", "", S.FAILED, None, None),  # a proposer may name its failure anything: no code decides
        ("neg", "def f(): ...", S.REJECTED, "prefers_chosen", None),
        ("nan", "def g(): ...", S.REJECTED, "finite", None),
        ("nan2", "def h(): ...", S.REJECTED, "finite", None),
        ("twin", "def i(): ...", S.DUPLICATE, None, None),
        ("crash", "def j(): ...", S.FAILED, None, None),  # the sandbox failed during the screen
        ("flat", "def k(): ...", S.DEGENERATE, None, None),
        ("dpo", "def l(): ...", S.EVALUATED, None, 0.5),
        ("ipo", "def m(): ...", S.EVALUATED, None, 0.4),
        ("busy", "def n(): ...", S.SCREENING, None, None),
    ]
    for step, (name, code, status, check, fitness) in enumerate(rows):
        cid = archive.upsert_proposal(step, name=name, code=code, code_hash=str(step), status=status)
        archive.update(cid, failed_check=check, fitness=fitness)
    return archive


def test_the_funnel_of_an_archive(tmp_path) -> None:
    funnel = Funnel.of(_archive(tmp_path).all())
    assert funnel.stages() == [("proposed", 11), ("passed the checks", 6), ("new (not a duplicate)", 5),
                               ("screened", 5), ("scored (not degenerate)", 2)]
    assert funnel.rejected_by_check == {"finite": 2, "prefers_chosen": 1}
    assert funnel.fractions() == {"rejected_by_checks": round(3 / 9, 4), "duplicates_of_passed": round(1 / 6, 4),
                                  "degenerate_of_screened": 0.2, "failed_of_screened": 0.2,
                                  "evaluated_of_proposed": round(3 / 11, 4)}


def test_the_run_report_and_the_bench_count_alike(tmp_path) -> None:
    candidates = _archive(tmp_path).all()
    counts = _funnel(candidates)
    assert Funnel.from_counts(counts).stages() == funnel_counts(candidates)["stages"]
    assert funnel_fractions(counts) == Funnel.of(candidates).fractions()
