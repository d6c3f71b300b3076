"""The rejection funnel of a run: how many candidates reached each stage. One definition for the run
report, the discovery bench and its report.

A candidate is counted at the furthest stage its archive row shows: a *failed proposal* (the proposer
raised: status failed and no code), *rejected* by the policy or a check (by check name), a *duplicate*,
*screened* (scored, degenerate, failed in the sandbox or still screening), and of those *evaluated*
(a proxy fitness) and *degenerate*. The stages of the funnel are proposed -> passed the checks -> new
(not a duplicate) -> screened -> scored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import Candidate

__all__ = ["Funnel", "STAGE_NAMES"]

STAGE_NAMES = ("proposed", "passed the checks", "new (not a duplicate)", "screened", "scored (not degenerate)")
_SCREENED = (CandidateStatus.EVALUATED, CandidateStatus.DEGENERATE, CandidateStatus.FAILED, CandidateStatus.SCREENING)


@dataclass
class Funnel:
    """Counts per stage (see the module docstring); ``rejected_by_check`` names the failed checks."""

    proposed: int = 0
    failed_proposal: int = 0
    rejected: int = 0
    duplicate: int = 0
    screened: int = 0
    failed_screen: int = 0
    degenerate: int = 0
    evaluated: int = 0
    rejected_by_check: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> "Funnel":
        """The funnel of ``candidates`` (archive rows)."""
        funnel = cls()
        for c in candidates:
            funnel.proposed += 1
            if c.status == CandidateStatus.FAILED and not c.code:
                funnel.failed_proposal += 1
            elif c.status == CandidateStatus.REJECTED:
                funnel.rejected += 1
                key = c.failed_check or "unknown"
                funnel.rejected_by_check[key] = funnel.rejected_by_check.get(key, 0) + 1
            elif c.status == CandidateStatus.DUPLICATE:
                funnel.duplicate += 1
            elif c.status in _SCREENED:
                funnel.screened += 1
                funnel.failed_screen += c.status == CandidateStatus.FAILED
                funnel.degenerate += c.status == CandidateStatus.DEGENERATE
                funnel.evaluated += c.status == CandidateStatus.EVALUATED
        funnel.rejected_by_check = dict(sorted(funnel.rejected_by_check.items(), key=lambda kv: (-kv[1], kv[0])))
        return funnel

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> "Funnel":
        """A funnel read back from ``as_dict()`` (a bench JSON); other keys are ignored."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in counts.items() if k in names})

    def stages(self) -> list[tuple[str, int]]:
        """(stage, count) in funnel order."""
        passed = self.proposed - self.failed_proposal - self.rejected
        return list(zip(STAGE_NAMES, (self.proposed, passed, passed - self.duplicate, self.screened, self.evaluated)))

    def fractions(self) -> dict[str, float | None]:
        """Each stage's losses as a share of what reached that stage (None when nothing did)."""

        def share(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        checked = self.proposed - self.failed_proposal
        passed = checked - self.rejected
        return {
            "rejected_by_checks": share(self.rejected, checked),
            "duplicates_of_passed": share(self.duplicate, passed),
            "degenerate_of_screened": share(self.degenerate, self.screened),
            "failed_of_screened": share(self.failed_screen, self.screened),
            "evaluated_of_proposed": share(self.evaluated + self.degenerate, self.proposed),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
