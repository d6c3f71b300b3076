"""Record a search's archive as plain data, to check that `concurrency = 1` gives today's results.

`python -m tests.agent.sequential_reference OUT.json` (from the repository root) ran the sequential search
of commit f850fdb (before `[search] concurrency` existed) on the tiny proxy and wrote
tests/agent/data/sequential_reference.json; tests/agent/test_concurrency.py runs the same searches now and
compares.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from lossforge.config import RunConfig
from lossforge.rundir.archive import Archive
from tests.conftest import TINY_SCREEN, TINY_WORLD

# (proposer kind, seed, generations)
CASES = [("evolution", 0, 8), ("random", 1, 5)]


def case_config(kind: str, seed: int, generations: int, cache_dir: Path, **search: Any) -> RunConfig:
    return RunConfig.model_validate({
        # the reward reading the reference was recorded with (the default became "sigmoid" afterwards)
        "proxy": {"world": {**TINY_WORLD, "reward_reading": "identity"}, "screen": TINY_SCREEN},
        "cache_dir": str(cache_dir),
        "search": {"generations": generations, "seed": seed, **search},
        "proposer": {"kind": kind},
    })


def archive_record(run_dir: Path) -> list[dict[str, Any]]:
    """Every row's identity and outcome, in step order (no timings, no timestamps)."""
    archive = Archive(Path(run_dir) / "archive.sqlite", readonly=True)
    try:
        rows = sorted(archive.all(), key=lambda c: c.step)
        return [{
            "step": c.step, "name": c.name, "code_hash": c.code_hash, "status": str(c.status),
            "failed_check": c.failed_check, "duplicate_of": c.duplicate_of, "fitness": c.fitness,
            "generation": c.generation, "parent_ids": c.parent_ids, "repair_of": c.repair_of,
        } for c in rows]
    finally:
        archive.close()


def main(out: str) -> None:
    from lossforge.agent.runner import run_search

    cache = Path(tempfile.mkdtemp(prefix="seqref-cache-"))
    record = {}
    for kind, seed, generations in CASES:
        run_dir = Path(tempfile.mkdtemp(prefix=f"seqref-{kind}-"))
        run_search(run_dir, case_config(kind, seed, generations, cache))
        record[f"{kind}-{seed}-{generations}"] = archive_record(run_dir)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
