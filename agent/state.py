"""The search's LangGraph state: small, JSON-serialisable pointers and counters.

Candidates themselves live in the archive; the state only says where the search is (which step, which
candidate is in flight, how many repairs it has had) and when it must stop. Counts of evaluated work
are read from the archive, never accumulated here, so a node re-run after a crash cannot count twice.
"""
from __future__ import annotations

from typing import TypedDict


class SearchState(TypedDict, total=False):
    step: int  # proposals made so far; the next proposal gets this number
    target_evaluated: int  # stop when the archive holds this many evaluated candidates
    candidate_id: int | None  # the candidate in flight
    repair_attempts: int  # repairs spent on the candidate in flight
    repair_of: int | None  # the failed candidate the next proposal must repair
    rejected_in_a_row: int  # proposals since the last evaluated one
    stop_reason: str | None
