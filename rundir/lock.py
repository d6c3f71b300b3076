"""One search process per run directory.

`RunLock(run_dir)` takes an exclusive OS-level lock (flock, via filelock) on `run.lock`. The kernel
drops it when the process dies, even by kill -9, so a crashed run never leaves a stale lock behind. The
holder writes its pid and start time to `run.pid` so that a refused second process can say who holds it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

from lossforge.errors import LossforgeError


class RunDirectoryBusy(LossforgeError, RuntimeError):
    """Another process is running a search in this run directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / "run.lock"), timeout=0)
        self._info = self.run_dir / "run.pid"

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            holder = self.holder()
            who = f"process {holder.get('pid')} (started {holder.get('started')})" if holder else "another process"
            raise RunDirectoryBusy(
                f"run directory {self.run_dir} is in use by {who}. Only one search may run in a directory at a "
                f"time: wait for it to finish or stop it, or use another --run-dir. "
                f"To watch it instead, use `lossforge status {self.run_dir}`."
            ) from None
        self._info.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        return self

    def holder(self) -> dict | None:
        try:
            return json.loads(self._info.read_text())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: object) -> None:
        self._info.unlink(missing_ok=True)
        self._lock.release()
