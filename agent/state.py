"""The search's LangGraph states: small, JSON-serialisable pointers and counters.

Candidates themselves live in the archive; a state only says where the search is. ``SearchState`` is
the supervisor's (checkpointed after every node): the next step number, the candidates in flight, the
target and when to stop. ``CandidateState`` is one candidate's walk through propose -> ... -> reflect
(run by a worker, not checkpointed: its nodes resume from the archive). Counts of evaluated work are
read from the archive, never accumulated here, so a node re-run after a crash cannot count twice.
"""
from __future__ import annotations

from typing import TypedDict


class SearchState(TypedDict, total=False):
    step: int  # proposals made so far; the next candidate gets this step number (repairs take theirs too)
    target_evaluated: int  # stop when the archive holds this many evaluated candidates
    in_flight: list[int]  # the first step of each candidate being worked on, in dispatch order
    rejected_in_a_row: int  # candidates since the last evaluated one
    stop_reason: str | None


class CandidateState(TypedDict, total=False):
    slot: int  # the step the candidate was dispatched with (its key in SearchState.in_flight)
    step: int  # the step number the next proposal of this candidate uses (a repair takes a new one)
    candidate_id: int | None  # the candidate being worked on (the latest repair of the chain)
    repair_attempts: int  # repairs spent on it
    repair_of: int | None  # the failed candidate the next proposal must repair
    stop_reason: str | None  # set when the LLM budget ran out before a repair
