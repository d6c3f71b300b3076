"""Steering a search from outside the graph: hints, pinned parents, excluded parents.

Stored in the archive's meta table under "steering", read by `build_context` before every proposal, so
a hint sent now reaches the next proposal, whichever process sent it.
"""
from __future__ import annotations

from lossforge.rundir.archive import STEERING_META, Archive

MAX_HINTS = 20


def _steering(archive: Archive) -> dict:
    data = archive.get_meta(STEERING_META, {}) or {}
    return {"hints": list(data.get("hints", [])), "pinned": list(data.get("pinned", [])), "excluded": list(data.get("excluded", []))}


def add_hint(archive: Archive, text: str) -> None:
    """Queue a hint for the proposer (the last few are shown in its context)."""
    text = text.strip()
    if not text:
        raise ValueError("a hint needs some text")
    data = _steering(archive)
    data["hints"] = (data["hints"] + [text])[-MAX_HINTS:]
    archive.set_meta(STEERING_META, data)


def toggle(archive: Archive, candidate_id: int, kind: str) -> bool:
    """Pin or exclude (kind "pinned" / "excluded") a candidate as a parent; returns the new state."""
    if kind not in ("pinned", "excluded"):
        raise ValueError(f"kind must be 'pinned' or 'excluded', not {kind!r}")
    archive.get(candidate_id)  # raises KeyError for an unknown id
    data = _steering(archive)
    other = "excluded" if kind == "pinned" else "pinned"
    if candidate_id in data[kind]:
        data[kind].remove(candidate_id)
        state = False
    else:
        data[kind].append(candidate_id)
        if candidate_id in data[other]:
            data[other].remove(candidate_id)
        state = True
    archive.set_meta(STEERING_META, data)
    return state


def steering(archive: Archive) -> dict:
    return _steering(archive)
