"""Events: JSON lines appended by the runner and followed by readers in other processes."""
from __future__ import annotations

from lossforge.rundir.events import EventLog, make_event, read_events


def test_a_follower_reads_only_complete_new_lines(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write(make_event("proposal", name="a"))
    events, offset = read_events(path)
    assert [e["name"] for e in events] == ["a"]
    with path.open("a") as handle:
        handle.write('{"kind": "partial"')  # a writer caught mid-line
    assert read_events(path, offset) == ([], offset)
    with path.open("a") as handle:
        handle.write("}\n")
    log.write(make_event("evaluated", name="b"))
    events, _ = read_events(path, offset)
    assert [e["kind"] for e in events] == ["partial", "evaluated"]
    log.close()


def test_listeners_see_every_event(tmp_path) -> None:
    seen: list[dict] = []
    log = EventLog(tmp_path / "events.jsonl")
    log.subscribe(seen.append)
    log.write(make_event("check", passed=True))
    assert seen[0]["kind"] == "check" and seen[0]["passed"] is True
    log.close()
