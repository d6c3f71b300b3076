"""The training tools: submit a full TRL training job with a loss, follow it, and judge the trained model.

They are thin: they validate their inputs and call `tools.training` (the job configuration, the
launcher's jobs, their files, the judge). `submit_training` checks the loss in the sandbox before any
job is made and submits through the context's launcher keyed by the job key (a hash of the loss code
and the training config), so the same loss with the same config is one job however often it is
submitted. `judge` grades through an LLM judge endpoint when one is configured, else reports the job's
held-out preference accuracy and says so in `kind` and `note`.
"""
from __future__ import annotations

import json
from typing import Any

from lossforge.tools.arguments import check_code, tool_context, validate
from lossforge.tools.context import ToolContext, ToolError, ToolInputError
from lossforge.tools.core import check_candidate
from lossforge.tools.schemas import (
    JobStatusInput,
    JobStatusResult,
    JudgeInput,
    JudgeResult,
    SubmitTrainingInput,
    SubmitTrainingResult,
    check_result,
    finite,
)

__all__ = ["submit_training", "job_status", "judge"]


def submit_training(code: str, job_config: dict[str, Any] | None = None, *,
                    context: ToolContext | None = None) -> SubmitTrainingResult:
    """Train a model with this loss: a full TRL DPO training job through the server's launcher. Returns a job_id.

    The loss is checked first (like check_loss, at the job's beta); a loss that fails is not submitted
    (status 'rejected', with the failed check). The job DPO-trains the server's SFT model on its preference
    data with the loss and evaluates it on held-out pairs; it runs in the background (minutes to hours), so
    poll job_status(job_id) until done is true, then call judge(job_id=...). Submitting the same code with
    the same settings again returns the same job (reused=true) instead of training twice. job_config
    overrides the server's training settings (TRL JobConfig fields such as beta, learning_rate, max_steps).
    """
    from lossforge.tools import training
    from lossforge.trainer.launchers.base import TrainJob

    ctx = tool_context(context)
    args = validate(SubmitTrainingInput, code=code, job_config=job_config)
    check_code(args.code, ctx)
    config = training.job_config(ctx, args.job_config)
    check = check_result(check_candidate(ctx.sandbox, args.code, config.beta))
    if not check.passed:
        return SubmitTrainingResult(job_id=None, status="rejected", check=check,
                                    summary=f"not submitted: the loss failed the checks: {check.summary}")
    launcher = ctx.launcher
    job = TrainJob(config=config, loss_code=args.code, time_limit_s=ctx.settings.training.time_limit_s)
    try:
        handle = launcher.submit(job)
        status = launcher.status(handle).value
    except Exception as error:  # noqa: BLE001 - a backend that refuses the job: say which and why
        raise ToolError(f"the {getattr(launcher, 'backend', 'training')} launcher could not submit the job: "
                        f"{type(error).__name__}: {error}") from error
    ctx.job_handles[handle.key] = handle
    what = "already submitted before; returning that job" if handle.reused else "submitted"
    return SubmitTrainingResult(job_id=handle.key, status=status, reused=handle.reused, launcher=handle.backend,
                                job_dir=handle.job_dir, check=check,
                                summary=f"job {handle.key} {what} ({status}); poll job_status for progress")


def job_status(job_id: str, *, context: ToolContext | None = None) -> JobStatusResult:
    """The status of a training job from submit_training: status, progress, metrics, and why it failed.

    status is 'queued', 'running', 'succeeded', 'failed', 'timeout' or 'cancelled'; done is true once it
    will not change. While it runs, progress has the phase, step / max_steps and the last training loss.
    When it succeeded, metrics has eval_accuracy (the share of held-out preference pairs the trained model
    prefers correctly; higher is better) and eval_margin; then call judge(job_id=...). When it did not
    succeed, error says why and stderr_tail shows the end of its log.
    """
    from lossforge.tools import training

    ctx = tool_context(context)
    args = validate(JobStatusInput, job_id=job_id)
    handle = training.find_job(ctx, args.job_id)
    status = ctx.launcher.status(handle)
    progress = training.read_progress(handle.job_dir)
    metrics: dict[str, Any] = {}
    error = tail = None
    if status.terminal:
        result = training.job_result(ctx, handle)
        metrics = {k: v for k, v in dict(
            eval_accuracy=finite(result.eval_accuracy), eval_margin=finite(result.eval_margin),
            eval_pairs=result.eval_pairs, train_loss=finite(result.train_loss), steps=result.steps,
            train_seconds=round(result.train_seconds, 3), total_seconds=round(result.total_seconds, 3),
        ).items() if v is not None}
        if not result.ok:
            error = result.error
            tail = training.stderr_tail(handle.job_dir)
    if status.value == "succeeded":
        summary = (f"job {args.job_id} succeeded: held-out preference accuracy {metrics.get('eval_accuracy')}, "
                   f"mean reward margin {metrics.get('eval_margin')}")
    elif status.terminal:
        summary = f"job {args.job_id} {status.value}: {(error or '').splitlines()[0] if error else 'no error recorded'}"
    else:
        where = f" at step {progress['step']}/{progress['max_steps']}" if "fraction" in progress else ""
        summary = f"job {args.job_id} is {status.value}{where} ({progress.get('phase', 'waiting')})"
    return JobStatusResult(job_id=args.job_id, status=status.value, done=status.terminal, progress=progress,
                           metrics=metrics, error=error, stderr_tail=tail, job_dir=handle.job_dir, summary=summary)


def judge(job_id: str | None = None, benchmark: str = "mt-bench", answers: dict[str, list[str]] | None = None, *,
          context: ToolContext | None = None) -> JudgeResult:
    """Score a trained model (job_id from submit_training, once job_status says succeeded) or a set of answers.

    With an LLM judge endpoint configured on the server: the trained model answers the benchmark's
    questions (kept with the job, so judging again costs nothing) and the judge grades them: MT-Bench is a
    mean rating 1-10 over both turns, Arena-Hard a win rate (0-1) against a baseline. Without an endpoint,
    or for a job that saved no model (a proxy-sized job), the score is the job's held-out preference
    accuracy (0-1) with its mean reward margin (kind 'preference_accuracy'). answers ({question id: [answer
    per turn]}) grades given answers instead of a job and needs an endpoint. Higher is better.
    """
    from lossforge.settings.judge import normalise_benchmark
    from lossforge.tools import training

    ctx = tool_context(context)
    args = validate(JudgeInput, job_id=job_id, benchmark=benchmark, answers=answers)
    try:
        bench = normalise_benchmark(args.benchmark)
    except ValueError as error:
        raise ToolInputError(str(error)) from None
    if (args.job_id is None) == (args.answers is None):
        raise ToolInputError("give exactly one of job_id (a finished training job) or answers (to grade directly).")
    score_name = "mt_bench_mean" if bench == "mt_bench" else "arena_hard_win_rate"

    def llm_result(summary: dict[str, Any], **extra: Any) -> JudgeResult:
        score = summary.get("mean") if bench == "mt_bench" else summary.get("win_rate")
        return JudgeResult(benchmark=bench, kind="llm_judge", score=finite(score), score_name=score_name,
                           details=json.loads(json.dumps(summary, default=str)), usd=float(summary.get("usd") or 0.0),
                           **extra)

    if args.answers is not None:
        if not args.answers:
            raise ToolInputError("answers is empty: give question id -> [answer per turn].")
        return llm_result(training.judge_answers(ctx, args.answers, bench),
                          note=f"{len(args.answers)} answer sets graded by {ctx.settings.judge.model}")

    handle = training.find_job(ctx, args.job_id)
    status = ctx.launcher.status(handle)
    if status.value != "succeeded":
        hint = "poll job_status until done" if not status.terminal else "see job_status for its error"
        raise ToolError(f"job {args.job_id} is {status.value}: only a succeeded job can be judged ({hint}).")
    result = training.job_result(ctx, handle)
    metrics = dict(eval_accuracy=finite(result.eval_accuracy), eval_margin=finite(result.eval_margin))
    if ctx.settings.judge is not None and result.model_dir:
        summary = training.judge_job(ctx, handle, result.model_dir, bench)
        return llm_result(summary, job_id=args.job_id, **metrics,
                          note=f"answers of the trained model graded by {ctx.settings.judge.model}")
    why = ("no LLM judge endpoint is configured" if ctx.settings.judge is None
           else "the job saved no model to generate answers with")
    return JudgeResult(
        job_id=args.job_id, benchmark=bench, kind="preference_accuracy", score=metrics["eval_accuracy"],
        score_name="eval_accuracy", **metrics,
        details={"eval_pairs": result.eval_pairs, "train_loss": finite(result.train_loss), "steps": result.steps},
        note=f"{why}: the score is the held-out preference accuracy of the trained model, not an LLM judge's rating",
    )
