"""SlurmLauncher: each training job is a submitit job, on a Slurm cluster or (for tests) submitit's local executor.

What it guarantees
------------------
* ``submitit`` is imported only when a job is submitted or looked up (optional dependency: the ``slurm``
  extra). One code path for both clusters: ``make_executor(job)`` is ``submitit.AutoExecutor(folder=
  ROOT/<key>/submitit, cluster=cluster)`` with ``executor_parameters(job)``, and ``submit`` pickles
  ``_job_body`` into it. ``cluster="slurm"`` (the default) submits with ``sbatch`` and fails with a clear
  ``RuntimeError`` where there is no Slurm; ``cluster="local"`` runs the job as a local subprocess through
  submitit's real pickling and job-folder machinery (used by the tests; no Slurm cluster in CI).
* ``slurm_parameters(job)``: one node, one task, ``gpus_per_node`` GPUs, ``cpus_per_task``, ``mem_gb``,
  ``timeout_min`` = the job's time limit in minutes rounded up plus one minute of slack, the job name
  ``lossforge-<key>``, and ``slurm_partition`` / ``slurm_account`` / ``slurm_qos`` when set, then ``extra``
  (any AutoExecutor parameter, e.g. ``{"slurm_constraint": "a100"}``). ``executor_parameters`` adds
  ``slurm_signal_delay_s=30`` so submitit's pre-timeout signal comes after the job's own limit.
* The job body (on the compute node) runs ``python -m lossforge.trainer.job_main ROOT/<key>`` in its own
  session, kills it at ``time_limit_s`` (status ``timeout``) and on any interruption (cancel, submitit's
  signals), and returns the ``JobResult`` with the tail of its stderr in ``error`` when it failed. It is
  pickled by value and uses only the standard library, so submitit's process does not import torch.
* Jobs are known by their directory, not by this object: ``submit`` claims ``ROOT/<key>/submitit.json``
  atomically and records the submitit job id there, so a second launcher (another process, a restart)
  returns the same job (``reused=True``) and can follow, cancel and read it. The terminal state is
  recorded in ``outcome.json`` (status and ``JobResult``). Resubmitting a finished job returns it;
  ``submit(job, retry=True)`` reruns a failed, timed-out or cancelled one.
* A job still running ``kill_grace_s`` after its time limit (counted from when the body started, so queue
  time does not count) is cancelled by ``status`` and ends ``timeout``: a backstop on top of the body's
  own limit and Slurm's ``--time``.

What it does not guarantee
--------------------------
* Tested only with submitit's local executor and with the sbatch script the Slurm executor would write
  (``tests/trainer/test_slurm_launcher.py``), never against a real Slurm controller here.
* On Slurm, ``ROOT`` must be on a file system the compute nodes share (submitit needs that anyway).
* A local-executor job started by another process is followed by its controller's pid
  (``/proc/<pid>/cmdline`` must still be submitit's controller for that folder); Linux only.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal

from lossforge.trainer.launchers.base import (
    JobHandle,
    JobStatus,
    TrainJob,
    job_key,
    recorded_result,
    read_log,
    recorded_status,
    tail,
)
from lossforge.trainer.job_config import JobResult

__all__ = ["SlurmLauncher"]

Cluster = Literal["slurm", "local"]
_META, _OUTCOME, _STARTED = "submitit.json", "outcome.json", "started.json"  # started.json: written by the body
_CLAIM_TTL_S = 300.0  # a claimed key with no job id after this long: the submission died
_SIGNAL_DELAY_S = 30  # submitit's pre-timeout signal: 30 s before --time, i.e. 30 s after the job's own limit


def _make_job_body() -> Callable[[str, str], dict[str, Any]]:
    """The function submitit runs. A nested function that uses only the standard library, so cloudpickle
    pickles it by value and the job's first process starts without importing lossforge (and torch)."""

    def job_body(job_json: str, job_dir: str) -> dict[str, Any]:
        """``job_main`` in its own session under the time limit; returns ``{"status", "result"}``."""
        import json
        import os
        import signal
        import socket
        import subprocess
        import sys
        import time
        from pathlib import Path

        d = Path(job_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "job.json").write_text(job_json)
        limit = float(json.loads(job_json).get("time_limit_s", 6 * 3600.0))
        status, why = "failed", None
        with open(d / "stdout.log", "ab") as out, open(d / "stderr.log", "ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "lossforge.trainer.job_main", str(d)], stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
            started = {"started": time.time(), "host": socket.gethostname(), "pid": proc.pid}
            (d / "started.json").write_text(json.dumps(started))
            try:
                rc = proc.wait(timeout=limit)
                why = None if rc == 0 else f"the job exited with code {rc}"
            except subprocess.TimeoutExpired:
                status, why = "timeout", f"killed at its time limit ({limit:g}s)"
            finally:  # also on cancel (SIGINT) and submitit's timeout signal: never leave the job running
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        try:
            result = json.loads((d / "result.json").read_text())
        except (OSError, ValueError):
            result = {"ok": False, "job_dir": str(d)}
        if why is None and result.get("ok"):
            return {"status": "succeeded", "result": result}
        stderr = (d / "stderr.log").read_text(errors="replace")
        stderr = stderr if len(stderr) <= 3000 else "..." + stderr[-3000:]
        result["ok"] = False
        result["error"] = f"{why or result.get('error') or 'the job failed'}\n--- stderr (tail) ---\n{stderr}"
        return {"status": status, "result": result}

    return job_body


_job_body = _make_job_body()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _local_controller_running(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is (still) submitit's local controller for ``folder`` (not a zombie, not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"submitit.local._local" in cmdline and str(folder).encode() in cmdline


def _job_main_running(pid: int, job_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"lossforge.trainer.job_main" in cmdline and str(job_dir).encode() in cmdline


class SlurmLauncher:
    """See the module docstring."""

    backend = "slurm"

    def __init__(self, folder: str | Path, *, partition: str | None = None, gpus_per_node: int = 1,
                 cpus_per_task: int = 8, mem_gb: int = 64, account: str | None = None, qos: str | None = None,
                 cluster: Cluster = "slurm", extra: dict[str, Any] | None = None, poll_s: float = 1.0,
                 kill_grace_s: float = 60.0) -> None:
        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local', not {cluster!r}")
        self.folder = Path(folder).expanduser().resolve()
        self.partition, self.gpus_per_node, self.cpus_per_task, self.mem_gb = partition, gpus_per_node, cpus_per_task, mem_gb
        self.account, self.qos, self.cluster = account, qos, cluster
        self.extra = dict(extra or {})
        self.poll_s, self.kill_grace_s = poll_s, kill_grace_s
        self._jobs: dict[str, Any] = {}  # key -> submitit Job (submitted here or looked up by id)
        self._lock = threading.RLock()

    # -- parameters and the executor -----------------------------------------------------------------
    def slurm_parameters(self, job: TrainJob) -> dict[str, Any]:
        """The resources of ``job``, as AutoExecutor parameters (generic names; Slurm-only ones prefixed)."""
        params: dict[str, Any] = {
            "name": f"lossforge-{job_key(job)}",
            "timeout_min": int(math.ceil(job.time_limit_s / 60.0)) + 1,
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
        }
        for name, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos)):
            if value:
                params[f"slurm_{name}"] = value
        params.update(self.extra)
        return params

    def executor_parameters(self, job: TrainJob) -> dict[str, Any]:
        """What ``make_executor`` passes to ``update_parameters``: ``slurm_parameters`` and the signal delay."""
        return {"slurm_signal_delay_s": _SIGNAL_DELAY_S, **self.slurm_parameters(job)}

    def make_executor(self, job: TrainJob) -> Any:
        """The configured ``submitit.AutoExecutor`` for ``job`` (nothing is submitted)."""
        import submitit  # lazy: optional dependency

        try:
            ex = submitit.AutoExecutor(folder=str(self.folder / job_key(job) / "submitit"), cluster=self.cluster)
        except RuntimeError as e:  # submitit's SlurmExecutor without srun
            raise RuntimeError(f"no Slurm on this machine ({e}); for a local run through submitit set "
                               "cluster='local' ([train.launcher] slurm_cluster = \"local\")") from e
        ex.update_parameters(**self.executor_parameters(job))
        return ex

    # -- the protocol ------------------------------------------------------------------------------
    def submit(self, job: TrainJob, *, retry: bool = False) -> JobHandle:
        key = job_key(job)
        d = self.folder / key
        with self._lock:
            meta = _read_json(d / _META)
            if meta is not None or (d / _META).exists() or (d / "result.json").exists():
                handle = JobHandle(key=key, backend=self.backend, job_dir=str(d), reused=True,
                                   backend_id=(meta or {}).get("job_id"))
                if not retry:
                    return handle
                status = self.status(handle)
                if not status.terminal or status is JobStatus.SUCCEEDED:
                    return handle
                self._jobs.pop(key, None)
                for name in (_META, _OUTCOME, _STARTED, "result.json", "stdout.log", "stderr.log"):
                    (d / name).unlink(missing_ok=True)
            d.mkdir(parents=True, exist_ok=True)
            try:  # claim the key: of two launchers submitting at once, one submits
                fd = os.open(d / _META, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return JobHandle(key=key, backend=self.backend, job_dir=str(d), reused=True)
            os.close(fd)
            try:
                (d / "job.json").write_text(job.model_dump_json(indent=2))
                sjob = self.make_executor(job).submit(_job_body, job.model_dump_json(), str(d))
            except BaseException:
                (d / _META).unlink(missing_ok=True)
                raise
            _write_json(d / _META, {"job_id": str(sjob.job_id), "cluster": self.cluster, "submitted": time.time(),
                                    "time_limit_s": job.time_limit_s})
            self._jobs[key] = sjob
        return JobHandle(key=key, backend=self.backend, job_dir=str(d), backend_id=str(sjob.job_id))

    def status(self, handle: JobHandle) -> JobStatus:
        with self._lock:
            d = self._dir(handle)
            outcome = _read_json(d / _OUTCOME)
            if outcome is not None:
                return JobStatus(outcome["status"])
            meta = _read_json(d / _META)
            if meta is None:
                if not (d / _META).exists():
                    return recorded_status(handle)
                if time.time() - (d / _META).stat().st_mtime < _CLAIM_TTL_S:
                    return JobStatus.QUEUED  # another launcher is submitting it right now
                return JobStatus(self._record(d, {"status": JobStatus.FAILED.value, "result": JobResult(
                    ok=False, error="its submission never completed (the submitting launcher died)",
                    job_dir=str(d)).model_dump()})["status"])
            sjob = self._submitit_job(handle.key, d, meta)
            if not self._running(sjob, d, meta):
                return JobStatus(self._conclude(d, sjob)["status"])
            started = _read_json(d / _STARTED)
            if started is None:
                return JobStatus.QUEUED
            over = time.time() - started["started"] - float(meta.get("time_limit_s", 6 * 3600.0))
            if over > self.kill_grace_s:
                self._stop(d, sjob, meta, JobStatus.TIMEOUT,
                           f"killed by the launcher: still running {over:.0f}s after its time limit")
                return JobStatus.TIMEOUT
            return JobStatus.RUNNING

    def result(self, handle: JobHandle, timeout: float | None = None) -> JobResult:
        """Wait until the job ends (TimeoutError after ``timeout`` s) and return its result."""
        end = None if timeout is None else time.monotonic() + timeout
        while not (status := self.status(handle)).terminal:
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {handle.key} still {status.value} after {timeout}s")
            time.sleep(self.poll_s)
        outcome = _read_json(self._dir(handle) / _OUTCOME)
        if outcome is not None:
            return JobResult.model_validate(outcome["result"])
        recorded = recorded_result(handle)
        if recorded is None:
            raise KeyError(f"job {handle.key} is unknown to this launcher and wrote no result in {handle.job_dir}")
        return recorded

    def cancel(self, handle: JobHandle) -> None:
        with self._lock:
            if self.status(handle).terminal:
                return
            d = self._dir(handle)
            meta = _read_json(d / _META)
            sjob = self._submitit_job(handle.key, d, meta) if meta else None
            self._stop(d, sjob, meta or {}, JobStatus.CANCELLED, "cancelled")

    def logs(self, handle: JobHandle, tail_chars: int = 4000) -> str:
        d = self._dir(handle)
        parts = []
        for name in ("stdout.log", "stderr.log"):
            p = d / name
            parts.append(f"--- {name} ---\n{tail(p.read_text(errors='replace'), tail_chars) if p.exists() else ''}")
        errs = sorted((d / "submitit").glob("*_log.err"), key=lambda p: p.stat().st_mtime)
        if errs and errs[-1].stat().st_size:
            parts.append(f"--- submitit ({errs[-1].name}) ---\n{tail(errs[-1].read_text(errors='replace'), tail_chars)}")
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------------------
    def _dir(self, handle: JobHandle) -> Path:
        return Path(handle.job_dir) if handle.job_dir else self.folder / handle.key

    def _submitit_job(self, key: str, d: Path, meta: dict[str, Any]) -> Any:
        """The submitit Job of ``key``: the one submitted here, else rebuilt from the recorded id."""
        sjob = self._jobs.get(key)
        if sjob is None or str(sjob.job_id) != str(meta["job_id"]):
            import submitit

            cls = submitit.LocalJob if meta.get("cluster") == "local" else submitit.SlurmJob
            sjob = self._jobs[key] = cls(d / "submitit", str(meta["job_id"]))
        return sjob

    @staticmethod
    def _running(sjob: Any, d: Path, meta: dict[str, Any]) -> bool:
        if meta.get("cluster") == "local" and getattr(sjob, "_process", None) is None:
            # a local job started by another process (or launcher): submitit cannot poll it, /proc can
            return not sjob.paths.result_pickle.exists() and _local_controller_running(int(meta["job_id"]), d / "submitit")
        return not sjob.done()

    def _conclude(self, d: Path, sjob: Any) -> dict[str, Any]:
        """Record the outcome of a finished submitit job in ``outcome.json`` (the first record wins)."""
        try:
            out = sjob.result()
            outcome = {"status": JobStatus(out["status"]).value, "result": JobResult.model_validate(out["result"]).model_dump()}
        except Exception as e:  # noqa: BLE001 - the body raised or never ran (killed, submitit's timeout signal)
            status = JobStatus.TIMEOUT if "timed-out" in str(e) else JobStatus.FAILED
            err = tail(read_log(d / "stderr.log"), 3000)
            error = f"the submitit job failed: {tail(str(e), 2000)}" + (f"\n--- stderr (tail) ---\n{err}" if err else "")
            outcome = {"status": status.value, "result": JobResult(ok=False, error=error, job_dir=str(d)).model_dump()}
        return self._record(d, outcome)

    @staticmethod
    def _record(d: Path, outcome: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
        existing = None if overwrite else _read_json(d / _OUTCOME)
        if existing is not None:
            return existing
        _write_json(d / _OUTCOME, outcome)
        return outcome

    def _stop(self, d: Path, sjob: Any, meta: dict[str, Any], status: JobStatus, reason: str) -> None:
        """End a job that is still queued or running, recording ``status`` first (so it wins over a failure)."""
        self._record(d, {"status": status.value, "result": JobResult(ok=False, error=reason, job_dir=str(d)).model_dump()},
                     overwrite=True)
        if sjob is not None:
            if meta.get("cluster") == "local":
                self._stop_local(d, sjob, meta)
            else:
                sjob.cancel(check=False)  # scancel: Slurm kills the whole allocation
        err = tail(read_log(d / "stderr.log"), 3000)
        if err:
            self._record(d, {"status": status.value, "result": JobResult(
                ok=False, error=f"{reason}\n--- stderr (tail) ---\n{err}", job_dir=str(d)).model_dump()}, overwrite=True)

    def _stop_local(self, d: Path, sjob: Any, meta: dict[str, Any]) -> None:
        proc = getattr(sjob, "_process", None)
        pid = int(meta["job_id"])
        if proc is not None:
            sjob.cancel(check=False)  # SIGINT to submitit's controller: it stops the task, the body its job
        elif _local_controller_running(pid, d / "submitit"):
            os.kill(pid, signal.SIGINT)
        end = time.monotonic() + 10.0
        while time.monotonic() < end and (proc.poll() is None if proc is not None
                                          else _local_controller_running(pid, d / "submitit")):
            time.sleep(0.1)
        started = _read_json(d / _STARTED) or {}
        child = started.get("pid")
        if child and _job_main_running(int(child), d):  # the body was killed before it could stop its job
            try:
                os.killpg(int(child), signal.SIGKILL)
            except ProcessLookupError:
                pass
