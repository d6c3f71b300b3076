"""Where a candidate is in the search: ``CandidateStatus``, stored as text in the archive.

proposed -> checking -> rejected | checked -> duplicate | screening -> evaluated | degenerate | failed.
A ``StrEnum``: a member equals its value (``CandidateStatus.EVALUATED == "evaluated"``), formats as it,
and is stored by sqlite3 and JSON as the plain string, so archives written before it read the same.
"""
from __future__ import annotations

from enum import StrEnum

__all__ = ["CandidateStatus", "SCORED"]


class CandidateStatus(StrEnum):
    """The statuses of an archive row, in the order a candidate passes them."""

    PROPOSED = "proposed"
    CHECKING = "checking"
    REJECTED = "rejected"      # failed the policy or a unit check
    CHECKED = "checked"
    DUPLICATE = "duplicate"    # behaves like a candidate already in the archive
    SCREENING = "screening"
    EVALUATED = "evaluated"    # has a proxy fitness
    DEGENERATE = "degenerate"  # trained to a non-finite or collapsed model
    FAILED = "failed"          # the proposal, the sandbox or the screen failed


# Statuses whose candidates were scored by the proxy (a fitness or a degenerate reading).
SCORED = (CandidateStatus.EVALUATED, CandidateStatus.DEGENERATE)
