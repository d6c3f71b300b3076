"""The search's optional train stage: a promoted candidate gets a full training job, then a judge's score.

The cascade of DESIGN.md: checks -> proxy screen -> (promoted) training job -> judge. With `[train]
enabled = true`, the graph runs `train` after `screen`; `TrainStage.run(candidate_id)` decides whether
the candidate is promoted and, if so, trains and judges it through the tool API (`submit_training`,
`job_status`, `judge`), the same functions other agents call, so the search and an outside agent share
jobs, keys and results.

What it guarantees
------------------
* Promotion: a candidate is promoted when it was evaluated with a finite proxy fitness, ranks in the
  archive's top `promote_top` (ties: the earlier candidate first), reaches `min_fitness` when set, and
  fewer than `max_jobs` candidates of the run have had a job. Nothing else is trained.
* Idempotent under crashes: the job key is a hash of the loss code and the job config, and the job id
  is written to the archive (`result["train"]`) right after submission. A node re-run after a crash
  polls the recorded job instead of submitting; even a re-submission would return the same job
  (`reused`), never a second training run. A finished record is never recomputed.
* The outcome is recorded in the candidate's `result["train"]`: `status`, `job_id`, and when it
  succeeded `fitness` (the judge's score: MT-Bench mean / Arena-Hard win rate with `[train.judge]`, else
  the held-out preference accuracy), `fitness_kind`, `score_name`, `eval_accuracy`, `eval_margin`; when
  it did not, `error` and `stderr_tail`. The proxy `fitness` column is not changed: the search keeps
  ranking by one comparable number. `training_note(candidate)` turns the record into the line the
  reflection gets (a failed job's stderr tail included).
* A stop request while a job runs stops the waiting, not the job: the record keeps the job id and its
  last status, and the next `run` of this stage (this or a later invocation) collects it first.

What it does not guarantee
--------------------------
* Parallelism at ``[search] concurrency = 1``: the search waits for the job (polling every `poll_s`), as
  the cascade is sequential. With more, the job is submitted and the search goes on; the supervisor
  records its result when it arrives (``collect_pending``).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import Archive, Candidate
from lossforge.rundir.events import EventKind, emit
from lossforge.rundir.in_flight import TRAIN_FINISHED as FINISHED

__all__ = ["TrainStage", "training_note", "FINISHED"]


def training_note(candidate: Candidate) -> str | None:
    """One line on the candidate's training outcome for its reflection, or None when it was not trained."""
    record = (candidate.result or {}).get("train")
    if not isinstance(record, dict):
        return None
    job = record.get("job_id") or "-"
    status = record.get("status")
    if status == "succeeded":
        fitness = record.get("fitness")
        shown = f"{fitness:.4f}" if isinstance(fitness, (int, float)) else "none"
        return (f"Full training (job {job}) succeeded: {record.get('score_name')} {shown} ({record.get('fitness_kind')}); "
                f"held-out preference accuracy {record.get('eval_accuracy')}, mean reward margin {record.get('eval_margin')}.")
    if status in FINISHED:
        error = (record.get("error") or "").strip()
        tail = (record.get("stderr_tail") or "").strip()
        note = f"Full training (job {job}) {status}: {error.splitlines()[0] if error else 'no error recorded'}"
        if tail and tail not in error:
            note += f"\nstderr tail:\n{tail[-1500:]}"
        elif error and "\n" in error:
            note += "\n" + error[-1500:]
        return note
    return f"Full training (job {job}) is {status}; its result is collected by a later step."


class TrainStage:
    """Train and judge promoted candidates of one run (see the module docstring)."""

    def __init__(self, config: Any, archive: Archive, sandbox: Any, stop_requested: threading.Event | None = None,
                 context: Any = None) -> None:
        self.config = config
        self.archive = archive
        self.sandbox = sandbox
        self.stop_requested = stop_requested or threading.Event()
        self._context = context
        self._collecting = threading.Lock()  # one collector at a time (workers and the supervisor)

    @property
    def settings(self) -> Any:
        return self.config.train

    def tool_context(self) -> Any:
        """The tool context the stage submits through: the run's sandbox, jobs under RUN_DIR/jobs.

        The launcher is ``[train.launcher]``'s, with one exception: with ``[search] executor = "ray"`` and
        the launcher's kind not set (the default, "local"), the jobs go to the ``RayLauncher`` on the
        search's cluster (``[search] ray_address``; none: the Ray the run's sandbox started, else a local
        one), with the launcher table's other Ray options (``ray_num_gpus``: 1 GPU a job unless set;
        ``ray_num_cpus``, ``ray_init``). A kind set explicitly, "local" included, is kept.
        """
        if self._context is None:
            from lossforge.tools.context import ToolContext, ToolSettings

            run_dir = self.archive.path.parent
            settings = ToolSettings.from_run_config(self.config, work_dir=run_dir / "tools")
            jobs = self.settings.jobs_dir if self.settings.jobs_dir is not None else run_dir / "jobs"
            settings.training.jobs_dir = Path(jobs)
            launcher = settings.training.launcher
            if self.config.search.executor == "ray" and "kind" not in self.config.train.launcher.model_fields_set:
                settings.training.launcher = launcher.model_copy(
                    update={"kind": "ray", "ray_address": self.config.search.ray_address or "local"})
            self._context = ToolContext(settings, sandbox=self.sandbox)
        return self._context

    # -- promotion -------------------------------------------------------------------------------
    def _records(self) -> list[tuple[Candidate, dict[str, Any]]]:
        out = []
        for candidate in self.archive.all():
            record = (candidate.result or {}).get("train")
            if isinstance(record, dict):
                out.append((candidate, record))
        return out

    def promoted(self, candidate: Candidate) -> bool:
        s = self.settings
        if candidate.status != CandidateStatus.EVALUATED or candidate.fitness is None:
            return False
        if s.min_fitness is not None and candidate.fitness < s.min_fitness:
            return False
        if candidate.id not in {c.id for c in self.archive.top(s.promote_top)}:
            return False
        if s.max_jobs is not None and sum(1 for c, _ in self._records() if c.id != candidate.id) >= s.max_jobs:
            return False
        return True

    # -- the node body ---------------------------------------------------------------------------
    def run(self, candidate_id: int, *, wait: bool = True) -> None:
        """Collect jobs left running by an earlier stop, then train and judge `candidate_id` if promoted;
        with ``wait=False`` the job is submitted and its status read once (``collect_pending`` goes on)."""
        self.collect_pending(exclude=candidate_id)
        candidate = self.archive.get(candidate_id)
        record = (candidate.result or {}).get("train")
        if isinstance(record, dict) and record.get("status") in FINISHED:
            return  # already trained and recorded (a re-run node)
        if not isinstance(record, dict):
            if not self.promoted(candidate):
                return
            record = self._submit(candidate)
            if record.get("job_id") is None:  # rejected by the checks or not submitted: recorded, done
                return
        self._follow(self.archive.get(candidate_id), record, wait=wait)

    def pending(self) -> list[int]:
        """Ids of candidates whose training job was submitted and has not finished."""
        return [c.id for c, record in self._records() if record.get("status") not in FINISHED and record.get("job_id")]

    def collect_pending(self, exclude: int | None = None) -> None:
        """Read each unfinished job's status once; record (and judge) the ones that finished."""
        with self._collecting:
            for other, record in self._records():
                if other.id != exclude and record.get("status") not in FINISHED and record.get("job_id"):
                    self._follow(other, record, wait=False)

    def _save(self, candidate_id: int, record: dict[str, Any]) -> None:
        result = dict(self.archive.get(candidate_id).result or {})
        result["train"] = record
        self.archive.update(candidate_id, result=result)

    def _submit(self, candidate: Candidate) -> dict[str, Any]:
        from lossforge.tools import api
        from lossforge.tools.context import ToolError

        emit(EventKind.TRAIN_STARTED, candidate_id=candidate.id, name=candidate.name, proxy_fitness=candidate.fitness)
        try:
            submitted = api.submit_training(candidate.code, context=self.tool_context())
        except ToolError as error:
            record: dict[str, Any] = {"status": "error", "job_id": None, "error": f"could not submit: {error}"}
        else:
            record = {"status": submitted.status, "job_id": submitted.job_id, "reused": submitted.reused,
                      "job_dir": submitted.job_dir, "submitted_at": round(time.time(), 3)}
            if submitted.status == "rejected":
                record["error"] = submitted.summary
        self._save(candidate.id, record)
        emit(EventKind.TRAIN_SUBMITTED, candidate_id=candidate.id, name=candidate.name, job_id=record.get("job_id"),
             status=record["status"], reused=record.get("reused", False), error=record.get("error"))
        return record

    def _follow(self, candidate: Candidate, record: dict[str, Any], *, wait: bool) -> None:
        from lossforge.tools import api
        from lossforge.tools.context import ToolError

        ctx = self.tool_context()
        job_id = record["job_id"]
        started = time.perf_counter()
        last: tuple[Any, ...] | None = None
        while True:
            try:
                status = api.job_status(job_id, context=ctx)
            except ToolError as error:
                record.update(status="error", error=f"status unavailable: {error}")
                break
            seen = (status.status, status.progress.get("phase"), status.progress.get("step"))
            if seen != last:
                last = seen
                emit(EventKind.TRAIN_PROGRESS, candidate_id=candidate.id, name=candidate.name, job_id=job_id,
                     status=status.status, progress=status.progress)
            if status.done:
                record.update(status=status.status)
                if status.status == "succeeded":
                    self._judge(ctx, job_id, status, record)
                else:
                    record.update(error=status.error, stderr_tail=status.stderr_tail)
                break
            if not wait or self.stop_requested.is_set():
                if status.status != record.get("status"):
                    record["status"] = status.status
                    self._save(candidate.id, record)
                return
            self.stop_requested.wait(self.settings.poll_s)
        self._save(candidate.id, record)
        if wait:
            self.archive.add_timing(candidate.id, "train", time.perf_counter() - started)
        emit(EventKind.TRAINED, candidate_id=candidate.id, name=candidate.name, job_id=job_id, status=record["status"],
             fitness=record.get("fitness"), fitness_kind=record.get("fitness_kind"), error=record.get("error"))

    def _judge(self, ctx: Any, job_id: str, status: Any, record: dict[str, Any]) -> None:
        from lossforge.tools import api
        from lossforge.tools.context import ToolError

        try:
            judged = api.judge(job_id=job_id, benchmark=self.settings.benchmark, context=ctx)
        except ToolError as error:  # the job is fine; the judge is not: keep the job's own metrics
            record.update(fitness=status.metrics.get("eval_accuracy"), fitness_kind="preference_accuracy",
                          score_name="eval_accuracy", eval_accuracy=status.metrics.get("eval_accuracy"),
                          eval_margin=status.metrics.get("eval_margin"), judge_error=str(error))
            return
        record.update(fitness=judged.score, fitness_kind=judged.kind, score_name=judged.score_name,
                      eval_accuracy=judged.eval_accuracy, eval_margin=judged.eval_margin, judge=judged.details,
                      judge_note=judged.note)
