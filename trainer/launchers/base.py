"""The Launcher protocol, the job description every backend runs, and the job key.

What it guarantees
------------------
* ``job_key(job)`` is a SHA-256 (first 24 hex digits) of the loss code and the training-relevant
  config (``JobConfig.key_fields()``: not the output or cache directories) and of the test hook: the same
  candidate with the same training config has the same key on every machine and in every process, so a
  launcher can return the existing job instead of training it twice. The time limit is not part of it.
* ``JobStatus`` values are strings, so they round-trip through ``state.json``.
"""
from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from lossforge.settings.base import Strict

from lossforge.trainer.job_config import JobConfig, JobResult


class TrainJob(Strict):
    """One job: train ``loss_code`` with ``config``, killed after ``time_limit_s``."""

    config: JobConfig
    loss_code: str
    time_limit_s: float = Field(6 * 3600.0, gt=0)
    debug_sleep_s: float = Field(0.0, ge=0, description="test hook: sleep this long before training")


def job_key(job: TrainJob) -> str:
    blob = json.dumps({"code": job.loss_code, "config": job.config.key_fields(), "sleep": job.debug_sleep_s},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED)


class JobHandle(BaseModel):
    """What ``submit`` returns: the job's key, the backend, and where its files are (or the backend id)."""

    key: str
    backend: str
    job_dir: Optional[str] = None
    backend_id: Optional[str] = None
    reused: bool = False  # True when submit found the job already there (dedup)


@runtime_checkable
class Launcher(Protocol):
    """Where training jobs run. ``submit`` is idempotent in the job's key."""

    def submit(self, job: TrainJob) -> JobHandle: ...

    def status(self, handle: JobHandle) -> JobStatus: ...

    def result(self, handle: JobHandle, timeout: float | None = None) -> JobResult: ...

    def cancel(self, handle: JobHandle) -> None: ...

    def logs(self, handle: JobHandle, tail_chars: int = 4000) -> str: ...


def recorded_result(handle: JobHandle) -> JobResult | None:
    """The result a job wrote to its directory (a job this process did not submit), or None if absent."""
    path = Path(handle.job_dir or "", "result.json")
    return JobResult.model_validate_json(path.read_text()) if path.exists() else None


def recorded_status(handle: JobHandle) -> JobStatus:
    """Status of a job known only by its directory: by the result it wrote, FAILED if it wrote none."""
    result = recorded_result(handle)
    return JobStatus.SUCCEEDED if result is not None and result.ok else JobStatus.FAILED


def tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def read_log(path: Path) -> str:
    """The text of a job's log file, or "" when it is missing or unreadable (a job that never started)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
