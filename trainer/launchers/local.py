"""LocalLauncher: a queue of training subprocesses on this machine, one GPU each.

What it guarantees
------------------
* Each job is ``python -m lossforge.trainer.job_main JOB_DIR`` in its own session (process group), with
  ``CUDA_VISIBLE_DEVICES`` set to the one GPU it was given (empty on a machine without GPUs). At most
  ``max_concurrent`` jobs run at once (default: the number of GPUs, 1 without); the rest wait in
  submission order.
* State is on disk, in ``ROOT/<job key>/``: ``job.json``, ``state.json`` (status, pid, gpu, times,
  reason), ``stdout.log``, ``stderr.log`` and what the job writes (``result.json``, ``metrics.json``,
  ``train.log``, ``model/``). Submitting a job whose key already has a directory returns the existing
  handle (``reused=True``), in this process or after a restart; a new ``LocalLauncher`` on the same root
  re-queues jobs that were still queued and keeps watching (by pid) jobs still running.
* A job past its ``time_limit_s`` is killed with its whole process group (SIGTERM, then SIGKILL after
  ``kill_grace_s``) and ends ``timeout``. ``cancel`` does the same and ends ``cancelled``.
* ``result`` of a job that did not succeed is a ``JobResult(ok=False)`` whose ``error`` says why (the
  job's own error when it wrote one, the exit code, timeout or cancellation) followed by the tail of its
  stderr.

What it does not guarantee
--------------------------
* One launcher per root at a time: two launcher processes on the same root could both start a queued
  job (no cross-process lock).
* Failed jobs are not retried: resubmitting returns the failed job; ``submit(job, retry=True)`` or
  removing its directory runs it again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lossforge.trainer.launchers.base import JobHandle, JobStatus, TrainJob, job_key, read_log, tail
from lossforge.trainer.job_config import JobResult

__all__ = ["LocalLauncher", "visible_gpus"]


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else torch's device count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is "alive" to kill(0); waitpid reaps it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class LocalLauncher:
    """See the module docstring."""

    backend = "local"

    def __init__(self, root: str | Path, *, gpus: list[str] | None = None, max_concurrent: int | None = None,
                 python: str = sys.executable, poll_s: float = 0.2, kill_grace_s: float = 3.0) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.max_concurrent = max_concurrent or max(1, len(self.gpus))
        self.python = python
        self.poll_s = poll_s
        self.kill_grace_s = kill_grace_s
        self._lock = threading.RLock()
        self._queue: list[str] = []
        self._procs: dict[str, subprocess.Popen] = {}
        self._running: dict[str, dict[str, Any]] = {}  # key -> {"pid", "gpu", "deadline"}
        self._thread: threading.Thread | None = None
        self._recover()

    # -- disk state ----------------------------------------------------------------------------
    def _dir(self, key: str) -> Path:
        return self.root / key

    def _state(self, key: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(key) / "state.json").read_text())
        except (OSError, ValueError):
            return {"status": JobStatus.QUEUED.value}

    def _write_state(self, key: str, **changes: Any) -> dict[str, Any]:
        state = {**self._state(key), **changes}
        path = self._dir(key) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)
        return state

    def _recover(self) -> None:
        queued: list[tuple[float, str]] = []
        for d in self.root.iterdir():
            if not (d / "job.json").exists():
                continue
            state = self._state(d.name)
            status = state.get("status")
            if status == JobStatus.QUEUED.value:
                queued.append((state.get("submitted", 0.0), d.name))
            elif status == JobStatus.RUNNING.value:
                pid = state.get("pid")
                if pid and _pid_alive(pid):
                    self._running[d.name] = {"pid": pid, "gpu": state.get("gpu"), "deadline": state.get("deadline")}
                else:
                    self._finish(d.name, None)
        self._queue = [k for _, k in sorted(queued)]
        if self._queue or self._running:
            self._ensure_thread()

    # -- the protocol ----------------------------------------------------------------------------
    def submit(self, job: TrainJob, *, retry: bool = False) -> JobHandle:
        key = job_key(job)
        d = self._dir(key)
        with self._lock:
            if (d / "job.json").exists():
                state = self._state(key)
                if not (retry and JobStatus(state["status"]).terminal and state["status"] != "succeeded"):
                    return JobHandle(key=key, backend=self.backend, job_dir=str(d), reused=True)
                for name in ("result.json", "stdout.log", "stderr.log"):
                    (d / name).unlink(missing_ok=True)
            d.mkdir(parents=True, exist_ok=True)
            (d / "job.json").write_text(job.model_dump_json(indent=2))
            self._write_state(key, status=JobStatus.QUEUED.value, submitted=time.time(), reason=None,
                              pid=None, returncode=None)
            self._queue.append(key)
            self._pump()
            self._ensure_thread()
        return JobHandle(key=key, backend=self.backend, job_dir=str(d))

    def status(self, handle: JobHandle) -> JobStatus:
        with self._lock:
            self._pump()
            return JobStatus(self._state(handle.key)["status"])

    def result(self, handle: JobHandle, timeout: float | None = None) -> JobResult:
        """Wait until the job ends (TimeoutError after ``timeout`` s) and return its result."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.status(handle).terminal:
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {handle.key} still {self.status(handle).value} after {timeout}s")
            time.sleep(self.poll_s)
        d = self._dir(handle.key)
        state = self._state(handle.key)
        result = None
        if (d / "result.json").exists():
            try:
                result = JobResult.model_validate_json((d / "result.json").read_text())
            except ValueError:
                result = None
        if state["status"] == JobStatus.SUCCEEDED.value and result is not None and result.ok:
            return result
        why = state.get("reason") or (result.error if result is not None and result.error else "job failed")
        if result is not None and result.error and result.error not in why:
            why = f"{why}: {result.error}"
        err = tail(read_log(d / "stderr.log"), 3000)
        failed = result.model_copy() if result is not None else JobResult(ok=False, job_dir=str(d))
        failed.ok = False
        failed.error = f"{why}\n--- stderr (tail) ---\n{err}" if err else why
        return failed

    def cancel(self, handle: JobHandle) -> None:
        with self._lock:
            key = handle.key
            if key in self._queue:
                self._queue.remove(key)
                self._write_state(key, status=JobStatus.CANCELLED.value, reason="cancelled before it started")
            elif key in self._running:
                self._kill(key)
                self._finish(key, None, status=JobStatus.CANCELLED, reason="cancelled while running")

    def logs(self, handle: JobHandle, tail_chars: int = 4000) -> str:
        d = self._dir(handle.key)
        return (f"--- stdout ---\n{tail(read_log(d / 'stdout.log'), tail_chars)}\n"
                f"--- stderr ---\n{tail(read_log(d / 'stderr.log'), tail_chars)}")

    def wait_all(self, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._pump()
                if not self._queue and not self._running:
                    return
            if end is not None and time.monotonic() > end:
                raise TimeoutError("jobs still running")
            time.sleep(self.poll_s)

    # -- the scheduler ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="lossforge-local-launcher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._pump()
                if not self._queue and not self._running:
                    return
            time.sleep(self.poll_s)

    def _free_gpu(self) -> str | None:
        used = {r["gpu"] for r in self._running.values()}
        return next((g for g in self.gpus if g not in used), None)

    def _pump(self) -> None:
        now = time.time()
        for key, info in list(self._running.items()):
            proc = self._procs.get(key)
            rc = proc.poll() if proc is not None else (None if _pid_alive(info["pid"]) else -1)
            if rc is not None:
                self._finish(key, rc)
            elif info.get("deadline") and now > info["deadline"]:
                self._kill(key)
                self._finish(key, None, status=JobStatus.TIMEOUT,
                             reason=f"killed at its time limit ({self._state(key).get('time_limit_s')}s)")
        while self._queue and len(self._running) < self.max_concurrent:
            self._start(self._queue.pop(0))

    def _start(self, key: str) -> None:
        d = self._dir(key)
        job = TrainJob.model_validate_json((d / "job.json").read_text())
        gpu = self._free_gpu() if self.gpus else None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else "",
               "TQDM_DISABLE": "1"}
        with open(d / "stdout.log", "ab") as out, open(d / "stderr.log", "ab") as err:
            proc = subprocess.Popen([self.python, "-m", "lossforge.trainer.job_main", str(d)], stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.time() + job.time_limit_s
        self._procs[key] = proc
        self._running[key] = {"pid": proc.pid, "gpu": gpu, "deadline": deadline}
        self._write_state(key, status=JobStatus.RUNNING.value, pid=proc.pid, gpu=gpu, started=time.time(),
                          deadline=deadline, time_limit_s=job.time_limit_s)

    def _kill(self, key: str) -> None:
        info = self._running.get(key)
        if not info:
            return
        pid = info["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)  # the job is its own session: pgid == pid
        except ProcessLookupError:
            return
        end = time.monotonic() + self.kill_grace_s
        proc = self._procs.get(key)
        while time.monotonic() < end:
            if (proc.poll() is not None) if proc is not None else not _pid_alive(pid):
                break
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)  # also any child the job left behind
        except ProcessLookupError:
            pass
        if proc is not None:
            proc.wait()

    def _finish(self, key: str, rc: int | None, status: JobStatus | None = None, reason: str | None = None) -> None:
        self._running.pop(key, None)
        self._procs.pop(key, None)
        if status is None:
            ok = False
            try:
                ok = json.loads((self._dir(key) / "result.json").read_text()).get("ok", False)
            except (OSError, ValueError):
                pass
            if rc == 0 and ok:
                status = JobStatus.SUCCEEDED
            else:
                status = JobStatus.FAILED
                if rc is None or rc == -1:
                    reason = reason or "the job process ended while no launcher was watching it"
                elif rc < 0:
                    reason = reason or f"the job was killed by signal {-rc}"
                else:
                    reason = reason or f"the job exited with code {rc}"
        self._write_state(key, status=status.value, returncode=rc, ended=time.time(), reason=reason)
