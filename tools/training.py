"""Training and judging behind the tool API: the job configuration, job lookup, progress, results, judging.

`tools.api.submit_training`, `job_status` and `judge` are thin: they validate their inputs and call the
helpers here with a `ToolContext`. The search's train stage (`agent.train_stage`) calls those same API
functions, so a job submitted by another agent and one submitted by the search are the same job (same
key, same directory) and are never trained twice.

What it guarantees
------------------
* `job_config(ctx, overrides)` is the server's base job (`settings.training.job_file`, then
  `settings.training.job` on top) with the caller's `overrides` on top, validated as a `JobConfig`;
  every problem is listed in one `ToolInputError`. The caller may not set where the job writes
  (`output_dir`, `ref_cache_dir`): the launcher decides the job directory, and the reference-log-prob
  cache is the server's (`ref_cache_dir` from the base job, else `work_dir/ref_logps`).
* `find_job(ctx, job_id)` accepts only job ids of the launcher's form (24 hex digits), so an id can
  never name a path outside the jobs folder; an id with no job raises `ToolInputError`.
* `read_progress` / `stderr_tail` read a job's files and never raise for a missing or torn file.
* `judge_job` / `judge_answers` grade through `evaluators.judge_run.run_judge` (the same code as
  `lossforge judge`); generated answers are kept in the job directory (`answers/<benchmark>.jsonl`), so a
  second judging call generates nothing and, with the judgement cache, asks the judge nothing again.

What it does not guarantee
--------------------------
* Anything about the job's own machine: with Ray or Slurm the job directory must be on a file system
  this process can read for progress and stderr (results come back through the backend regardless).
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossforge.tools.context import ToolContext, ToolError, ToolInputError

__all__ = ["JOB_ID", "job_config", "read_job_file", "find_job", "read_progress", "stderr_tail", "job_result",
           "judge_job", "judge_answers"]

JOB_ID = re.compile(r"^[0-9a-f]{24}$")
_SERVER_KEYS = ("output_dir", "ref_cache_dir")


def read_job_file(path: str | Path) -> dict[str, Any]:
    """JobConfig fields from a TOML or JSON file (a `[job]` table in TOML is accepted too)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise ToolError(f"cannot read the training job file {path}: {error}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ToolError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("job"), dict) and len(data) == 1:
        data = data["job"]
    if not isinstance(data, dict):
        raise ToolError(f"{path} must hold a table of JobConfig fields")
    return data


def job_config(ctx: ToolContext, overrides: dict[str, Any] | None) -> Any:
    """The validated `JobConfig` of one submission (see the module docstring)."""
    from lossforge.trainer.job_config import JobConfig

    training = ctx.settings.training
    forbidden = sorted(set(overrides or {}) & set(_SERVER_KEYS))
    if forbidden:
        raise ToolInputError(f"job_config may not set {forbidden}: the server decides where jobs write.")
    data: dict[str, Any] = {}
    if training.job_file is not None:
        data.update(read_job_file(training.job_file))
    data.update(training.job or {})
    data.update(overrides or {})
    data["output_dir"] = None
    data.setdefault("ref_cache_dir", str(ctx.work_dir() / "ref_logps"))
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'job_config'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        hint = ""
        if any(e["type"] == "missing" for e in error.errors()):
            hint = (" (no base job is configured for these fields: set [train] job = \"job.toml\" in the server's "
                    "config, or pass them in job_config)")
        raise ToolInputError(f"invalid job_config: {problems}{hint}") from None


def find_job(ctx: ToolContext, job_id: str) -> Any:
    """The launcher handle of `job_id`: one submitted through this context, or one found in the jobs folder."""
    from lossforge.trainer.launchers.factory import handle_for

    if not JOB_ID.match(job_id or ""):
        raise ToolInputError(f"{job_id!r} is not a job id: use the 24-hex-digit job_id that submit_training returned.")
    known = ctx.job_handles.get(job_id)
    if known is not None:
        return known
    handle = handle_for(ctx.launcher, job_id)
    if not (Path(handle.job_dir) / "job.json").exists():
        raise ToolInputError(f"no training job with id {job_id} in {ctx.jobs_dir()}; submit it with submit_training.")
    return handle


def read_progress(job_dir: str | Path | None) -> dict[str, Any]:
    """The job's `progress.json` plus a `fraction` (step / max_steps) when both are known; {} if absent."""
    try:
        data = json.loads(Path(job_dir or "", "progress.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    step, total = data.get("step"), data.get("max_steps")
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        data["fraction"] = round(min(1.0, step / total), 4)
    return data


def stderr_tail(job_dir: str | Path | None, chars: int = 3000) -> str | None:
    """The last `chars` characters of the job's stderr, or None when it wrote none."""
    try:
        text = Path(job_dir or "", "stderr.log").read_text(errors="replace")
    except OSError:
        return None
    text = text.strip()
    if not text:
        return None
    return text if len(text) <= chars else "..." + text[-chars:]


def job_result(ctx: ToolContext, handle: Any) -> Any:
    """The `JobResult` of a finished job (the launcher's, which carries the stderr tail of a failure)."""
    try:
        return ctx.launcher.result(handle, timeout=30)
    except (TimeoutError, KeyError) as error:
        raise ToolError(f"the result of job {handle.key} is not available: {error}") from None


def _endpoint_error(error: Exception) -> ToolError:
    from lossforge.settings.judge import JudgeRunError

    if isinstance(error, JudgeRunError):
        return ToolInputError(f"cannot judge: {error}")
    return ToolError(f"judging failed ({type(error).__name__}): {error}")


def _run(ctx: ToolContext, run: Any, out: Path | None) -> dict[str, Any]:
    from lossforge.evaluators.judge_run import run_judge

    try:
        return run_judge(run, out=out)
    except Exception as error:  # noqa: BLE001 - endpoint, budget, generation or input problems: say which
        raise _endpoint_error(error) from error


def _cache(ctx: ToolContext) -> Path:
    endpoint = ctx.settings.judge
    return Path(endpoint.cache).expanduser() if endpoint and endpoint.cache else ctx.work_dir() / "judgements.sqlite"


def judge_answers(ctx: ToolContext, answers: dict[str, list[str]], benchmark: str) -> dict[str, Any]:
    """Grade `answers` ({question id: [answer per turn]}) with the configured judge; the run's summary."""
    from lossforge.evaluators.answers import write_answers
    from lossforge.settings.judge import JudgeRunError

    endpoint = ctx.settings.judge
    if endpoint is None:
        raise ToolError("judging answers needs an LLM judge endpoint: set [judge] base_url and model in the "
                        "server's settings (or judge a training job by job_id to get its held-out metrics).")
    blob = json.dumps(answers, sort_keys=True).encode()
    path = ctx.work_dir() / "answers" / f"{hashlib.sha256(blob).hexdigest()[:16]}.jsonl"
    write_answers(path, answers, model_id="tool-answers")
    try:
        run = endpoint.run(benchmark, answers=path, cache=_cache(ctx))
    except JudgeRunError as error:
        raise ToolInputError(f"cannot judge: {error}") from None
    return _run(ctx, run, None)


def judge_job(ctx: ToolContext, handle: Any, model_dir: str, benchmark: str) -> dict[str, Any]:
    """Generate the trained model's answers (once; kept in the job directory) and grade them."""
    from lossforge.settings.judge import JudgeRunError, normalise_benchmark

    endpoint = ctx.settings.judge
    assert endpoint is not None
    bench = normalise_benchmark(benchmark)
    job_dir = Path(handle.job_dir)
    answers = job_dir / "answers" / f"{bench}.jsonl"
    try:
        if answers.exists():
            run = endpoint.run(bench, answers=answers, cache=_cache(ctx))
        else:
            run = endpoint.run(bench, model_path=Path(model_dir), answers_out=answers, cache=_cache(ctx))
    except JudgeRunError as error:
        raise ToolInputError(f"cannot judge: {error}") from None
    return _run(ctx, run, job_dir / "judge" / f"{bench}.json")
