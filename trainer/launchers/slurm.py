"""SlurmLauncher: each job is a Slurm job submitted with submitit (one GPU, a time limit).

What it guarantees
------------------
* ``submitit`` is imported only when a ``SlurmLauncher`` is used (optional dependency).
* ``slurm_parameters(job)`` is the exact parameter dict given to ``executor.update_parameters``: one
  node, one task, ``gpus_per_node`` GPUs, ``timeout_min`` = the job's time limit rounded up (plus a
  minute of slack; the job's own subprocess is killed at the limit itself), the partition, CPUs and memory
  you pass, and the job name ``lossforge-<key>``.
* The Slurm job runs the same body as the Ray task (``python -m lossforge.trainer.job_main`` in a
  subprocess under the job's time limit) in ``folder/<key>``; ``submit`` is idempotent in the key while
  this object lives and, on a shared file system, across processes (a finished ``result.json`` is reused).

What it does not guarantee
--------------------------
* Tested only through submitit's local executor when submitit is installed (``cluster="local"``); never
  against a real Slurm controller here.
"""
from __future__ import annotations

import math
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
from lossforge.trainer.launchers.ray_launcher import _run_job_subprocess
from lossforge.trainer.trl_job import JobResult


class SlurmLauncher:
    backend = "slurm"

    def __init__(self, folder: str | Path, *, partition: str | None = None, gpus_per_node: int = 1,
                 cpus_per_task: int = 8, mem_gb: int = 64, cluster: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.partition, self.gpus_per_node, self.cpus_per_task, self.mem_gb = partition, gpus_per_node, cpus_per_task, mem_gb
        self.cluster = cluster  # None: auto (slurm when available); "local"/"debug" for tests
        self.extra = dict(extra or {})
        self._jobs: dict[str, Any] = {}

    def slurm_parameters(self, job: TrainJob) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": f"lossforge-{job_key(job)}",
            "timeout_min": int(math.ceil(job.time_limit_s / 60.0)) + 1,
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        params.update(self.extra)
        return params

    def _executor(self, key: str):
        import submitit  # lazy: optional dependency

        ex = submitit.AutoExecutor(folder=str(self.folder / key / "submitit"), cluster=self.cluster)
        return ex

    def submit(self, job: TrainJob) -> JobHandle:
        key = job_key(job)
        job_dir = self.folder / key
        if key in self._jobs or (job_dir / "result.json").exists():
            return JobHandle(key=key, backend=self.backend, job_dir=str(job_dir), reused=True)
        ex = self._executor(key)
        params = self.slurm_parameters(job)
        if self.cluster in ("local", "debug"):  # the local executors know only the generic parameters
            params = {k: v for k, v in params.items() if k in ("name", "timeout_min", "nodes", "tasks_per_node",
                                                               "gpus_per_node", "cpus_per_task", "mem_gb")}
        ex.update_parameters(**params)
        sjob = ex.submit(_run_job_subprocess, job.model_dump_json(), str(job_dir))
        self._jobs[key] = sjob
        return JobHandle(key=key, backend=self.backend, job_dir=str(job_dir), backend_id=str(sjob.job_id))

    def status(self, handle: JobHandle) -> JobStatus:
        sjob = self._jobs.get(handle.key)
        if sjob is None:
            return recorded_status(handle)
        if not sjob.done():
            return JobStatus.RUNNING if sjob.state in ("RUNNING", "COMPLETING") else JobStatus.QUEUED
        return JobStatus.SUCCEEDED if self.result(handle).ok else JobStatus.FAILED

    def result(self, handle: JobHandle, timeout: float | None = None) -> JobResult:
        sjob = self._jobs.get(handle.key)
        if sjob is None:
            recorded = recorded_result(handle)
            if recorded is None:
                raise KeyError(f"job {handle.key} is unknown to this launcher and wrote no result in {handle.job_dir}")
            return recorded
        try:
            return JobResult.model_validate(sjob.result())
        except Exception as e:  # noqa: BLE001 - submitit raises on a failed job
            return JobResult(ok=False, error=f"slurm job failed: {tail(str(e), 3000)}")

    def cancel(self, handle: JobHandle) -> None:
        sjob = self._jobs.get(handle.key)
        if sjob is not None:
            sjob.cancel(check=False)

    def logs(self, handle: JobHandle, tail_chars: int = 4000) -> str:
        d = Path(handle.job_dir or "")
        parts = []
        for name in ("stdout.log", "stderr.log"):
            p = d / name
            parts.append(f"--- {name} ---\n{tail(p.read_text(errors='replace'), tail_chars) if p.exists() else ''}")
        return "\n".join(parts)
