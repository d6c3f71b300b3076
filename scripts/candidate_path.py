"""The candidate's path through the code: which lossforge files one candidate's step touches, and the hops.

`python scripts/candidate_path.py` runs a tiny evolution search (2 candidates, the tiny proxy of the tests)
in this process with a profiler on every thread, and counts, from the second candidate's `propose` node to
the end of its `reflect` node, the distinct lossforge source files whose functions ran (host process; the
sandbox server's own files are not seen) and the distinct caller-file -> callee-file pairs between them
("hops"). Prints JSON. Used for issue 15's closing note (before and after the restructuring).
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1]) + "/"
sys.path.insert(0, ROOT)  # tests.conftest (the tiny proxy settings)

files: set[str] = set()
hops: set[tuple[str, str]] = set()
state = {"calls": 0, "active": False}


def _ours(path: str) -> bool:
    return path.startswith(ROOT) and "/.venv/" not in path and "/tests/" not in path and "/scripts/" not in path


def _profile(frame, event, arg):  # noqa: ANN001
    path = frame.f_code.co_filename
    if not _ours(path):
        return
    name = frame.f_code.co_name
    rel = path[len(ROOT):]
    if event == "call" and rel.endswith("nodes.py") and name == "propose":
        state["calls"] += 1
        state["active"] = state["calls"] == 2
    if not state["active"]:
        return
    if event == "call":
        files.add(rel)
        caller = frame.f_back
        while caller is not None and not _ours(caller.f_code.co_filename):
            caller = caller.f_back
        if caller is not None:
            src = caller.f_code.co_filename[len(ROOT):]
            if src != rel:
                files.add(src)
                hops.add((src, rel))
    elif event == "return" and rel.endswith("nodes.py") and name == "reflect":
        state["active"] = False


def main() -> None:
    from lossforge.agent.runner import run_search
    from lossforge.config import RunConfig
    from tests.conftest import TINY_SCREEN, TINY_WORLD

    config = RunConfig.model_validate({"proxy": {"world": TINY_WORLD, "screen": TINY_SCREEN},
                                       "cache_dir": tempfile.mkdtemp(), "search": {"generations": 2}})
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    try:
        run_search(Path(tempfile.mkdtemp()) / "run", config)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    print(json.dumps({"files": len(files), "hops": len(hops), "file_list": sorted(files),
                      "hop_list": sorted(f"{a} -> {b}" for a, b in hops)}, indent=1))


if __name__ == "__main__":
    main()
