"""RayLauncher: each job is a Ray task with ``num_gpus`` on an existing Ray cluster.

What it guarantees
------------------
* ``ray`` is imported only when a ``RayLauncher`` is used (it is an optional dependency).
* The task writes ``job.json`` into ``root/<key>`` *on the worker* and runs the same subprocess as the
  local launcher (``python -m lossforge.trainer.job_main``), with Ray's GPU assignment
  (``CUDA_VISIBLE_DEVICES``) inherited and ``time_limit_s`` enforced on its process group; it returns the
  ``JobResult`` as a dict, with the stderr tail in ``error`` when the job failed.
* ``submit`` is idempotent in the job key within this process (the same ObjectRef), and across processes
  when ``root`` is a shared file system (a finished ``result.json`` there is returned without resubmitting).

* Tested end to end with a local Ray instance (``tests/trainer/test_ray_launcher.py``: ray 2.60 on
  Python 3.11, ``ray.init(num_cpus=2, include_dashboard=False)``, the tiny model on CPU).

What it does not guarantee
--------------------------
* A job submitted by another process that has not finished yet is not known here (no ``result.json``
  yet): submitting it again starts a second task. ``status`` of a job known only by its directory is
  ``SUCCEEDED`` / ``FAILED`` from its ``result.json`` (``FAILED`` while it has none).
* Progress and stderr are read from ``root/<key>`` on the worker: on a multi-node cluster, ``root``
  must be a shared file system for ``job_status`` to show them (results come back through Ray).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lossforge.trainer.launchers.base import (
    JobHandle,
    JobStatus,
    TrainJob,
    job_key,
    recorded_result,
    recorded_status,
    tail,
)
from lossforge.trainer.job_config import JobResult


def _run_job_subprocess(job_json: str, job_dir: str) -> dict[str, Any]:
    """Run one job in a subprocess with a hard time limit; the body of the Ray task and the Slurm job."""
    import os
    import signal
    import subprocess
    import sys

    d = Path(job_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "job.json").write_text(job_json)
    limit = json.loads(job_json).get("time_limit_s", 6 * 3600.0)
    with open(d / "stdout.log", "ab") as out, open(d / "stderr.log", "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lossforge.trainer.job_main", str(d)], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout=limit)
            why = None if rc == 0 else f"the job exited with code {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            why = f"killed at its time limit ({limit}s)"
    try:
        result = json.loads((d / "result.json").read_text())
    except (OSError, ValueError):
        result = {"ok": False, "job_dir": str(d)}
    if why is not None or not result.get("ok"):
        stderr = tail((d / "stderr.log").read_text(errors="replace"), 3000)
        result["ok"] = False
        result["error"] = f"{why or result.get('error')}\n--- stderr (tail) ---\n{stderr}"
    return result


class RayLauncher:
    backend = "ray"

    def __init__(self, address: str | None = "auto", *, root: str | Path = "~/lossforge-jobs", num_gpus: float = 1.0,
                 num_cpus: float = 1.0, init_kwargs: dict[str, Any] | None = None) -> None:
        import ray  # lazy: optional dependency

        self._ray = ray
        # Ray's driver otherwise replaces builtins.print for good when it relays worker logs (read lazily).
        os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
        self.root = str(Path(root).expanduser())
        self.num_gpus, self.num_cpus = num_gpus, num_cpus
        self._refs: dict[str, Any] = {}
        self._task = ray.remote(_run_job_subprocess)

    def submit(self, job: TrainJob) -> JobHandle:
        key = job_key(job)
        job_dir = str(Path(self.root) / key)
        if key in self._refs or (Path(job_dir) / "result.json").exists():
            return JobHandle(key=key, backend=self.backend, job_dir=job_dir, reused=True)
        ref = self._task.options(num_gpus=self.num_gpus, num_cpus=self.num_cpus, name=f"lossforge-{key}").remote(
            job.model_dump_json(), job_dir)
        self._refs[key] = ref
        return JobHandle(key=key, backend=self.backend, job_dir=job_dir, backend_id=ref.hex())

    def status(self, handle: JobHandle) -> JobStatus:
        ref = self._refs.get(handle.key)
        if ref is None:
            return recorded_status(handle)
        ready, _ = self._ray.wait([ref], timeout=0)
        if not ready:
            return JobStatus.RUNNING
        return JobStatus.SUCCEEDED if self.result(handle).ok else JobStatus.FAILED

    def result(self, handle: JobHandle, timeout: float | None = None) -> JobResult:
        ref = self._refs.get(handle.key)
        if ref is None:
            recorded = recorded_result(handle)
            if recorded is None:
                raise KeyError(f"job {handle.key} is unknown to this launcher and wrote no result in {handle.job_dir}")
            return recorded
        try:
            return JobResult.model_validate(self._ray.get(ref, timeout=timeout))
        except self._ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"job {handle.key} still running after {timeout}s") from None
        except self._ray.exceptions.RayError as e:
            return JobResult(ok=False, error=f"ray task failed: {e}")

    def cancel(self, handle: JobHandle) -> None:
        ref = self._refs.get(handle.key)
        if ref is not None:
            self._ray.cancel(ref, force=True)

    def logs(self, handle: JobHandle, tail_chars: int = 4000) -> str:
        d = Path(handle.job_dir or "")
        parts = []
        for name in ("stdout.log", "stderr.log"):
            p = d / name
            parts.append(f"--- {name} ---\n{tail(p.read_text(errors='replace'), tail_chars) if p.exists() else ''}")
        return "\n".join(parts)
