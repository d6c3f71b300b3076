"""Helpers of ``ProcessSandbox`` about a job: its task's path arguments and source, a signal's name, the
candidate's function name, and the threads a user runs on this host (what ``RLIMIT_NPROC`` counts).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _function_name(code: str) -> str | None:
    import re

    match = re.search(r"^def\s+([A-Za-z]\w*)\s*\(", code if isinstance(code, str) else "", re.MULTILINE)
    return match.group(1) if match else None


def _path_arguments(args: tuple[Any, ...]) -> list[str]:
    """Top-level arguments that name existing absolute paths (exposed read-only to the task)."""
    out = []
    for arg in args:
        if isinstance(arg, os.PathLike):
            arg = os.fspath(arg)
        if isinstance(arg, str) and os.path.isabs(arg) and len(arg) < 4096 and "\0" not in arg:
            try:
                if os.path.exists(arg):
                    out.append(arg)
            except (OSError, ValueError):
                pass
    return out


def _task_source_roots(task: Any) -> list[str]:
    """Where ``task``'s module is imported from (the directory above its top-level package, or the main
    script), so the server can import it even if that is inside a hidden directory."""
    name = getattr(task, "__module__", None) or ""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not path:
        return []
    root = os.path.dirname(os.path.abspath(path))
    if name not in ("__main__", "__mp_main__"):
        depth = name.count(".") + (1 if os.path.basename(path).startswith("__init__.") else 0)
        for _ in range(depth):
            root = os.path.dirname(root)
    return [root]


_NPROC_CACHE: tuple[float, int] = (0.0, 0)


def _user_tasks(uid: int) -> int:
    """Threads owned by ``uid`` on this host (what ``RLIMIT_NPROC`` counts), cached for a second."""
    global _NPROC_CACHE
    now = time.monotonic()
    if now - _NPROC_CACHE[0] < 1.0:
        return _NPROC_CACHE[1]
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for pid in entries:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                uid_line = threads = None
                for line in f:
                    if line.startswith("Uid:"):
                        uid_line = line
                    elif line.startswith("Threads:"):
                        threads = line
                        break
            if uid_line is not None and int(uid_line.split()[1]) == uid:
                total += int(threads.split()[1]) if threads else 1
        except (OSError, ValueError, IndexError):
            continue
    _NPROC_CACHE = (now, total)
    return total
