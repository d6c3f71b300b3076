"""The tool API: plain typed functions over the sandbox, the proxy and a run's archive.

Every function takes its arguments as plain values (validated by the matching `*Input` model, whose
field descriptions are what an LLM sees), an optional `context: ToolContext` (default: a process-wide
one created on first use), and returns a pydantic `*Result` model. The same functions are served over
MCP (`lossforge.tools.mcp_server`) and as LangChain tools (`lossforge.tools.langchain_tools`).

What it guarantees
------------------
* Candidate code never runs in this process: checks, screens and loss curves all go through the
  context's sandbox (`check` / `run(code, task, ...)`), and `screen_loss` screens only code that
  passed the checks.
* Inputs over the context's limits (code length, number of seeds / betas / losses, k) raise
  `ToolInputError` before any work starts; a run directory that is not one (or is outside
  `settings.run_roots`) raises `ToolInputError`; anything else that stops a tool raises `ToolError`
  with a message saying what happened. A bad *candidate* is never an exception: it is a result with
  `passed=False` and the failed check's evidence and hint.
* Archive tools open the archive read-only and `propose_from` writes no candidate to the run (with the
  LLM proposer it adds what it spends to the run's LLM budget, kept in the archive).
* `submit_training` checks the loss in the sandbox before any job is made, and submits through the
  context's launcher (LocalLauncher by default) keyed by the job key (a hash of the loss code and the
  training config): the same loss with the same config is one job, however often and from however many
  processes it is submitted. `job_status` reads the launcher and the job's files; `judge` grades through
  `evaluators.judge_run` (an OpenAI-compatible endpoint from `settings.judge`) or, without one, reports
  the job's held-out preference accuracy and reward margin, and says so in `kind` and `note`.
* The search's own nodes use these same code paths: checks and screens through `tools.core`, training
  and judging through `submit_training` / `job_status` / `judge` (the optional train stage).

What it does not guarantee
--------------------------
* Speed: `screen_loss` costs one proxy screen per (seed, beta) (seconds each with the default proxy)
  plus, the first time a seed is used with a world configuration, building that world.
"""
from __future__ import annotations

import base64
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field, ValidationError

from lossforge.candidate.report import CheckResult
from lossforge.tools.core import check_candidate, screen_candidate
from lossforge.tools.context import (
    ToolContext,
    ToolError,
    ToolInputError,
    default_context,
)

__all__ = [
    # functions
    "check_loss", "screen_loss", "compare_losses", "plot_loss", "archive_top", "archive_get", "propose_from",
    "submit_training", "job_status", "judge", "TOOLS",
    # inputs
    "CheckLossInput", "ScreenLossInput", "CompareLossesInput", "PlotLossInput", "ArchiveTopInput",
    "ArchiveGetInput", "ProposeFromInput", "SubmitTrainingInput", "JobStatusInput", "JudgeInput",
    # results
    "CheckLossResult", "ScreenRun", "ScreenLossResult", "CompareRow", "CompareLossesResult", "LossCurve",
    "PlotResult", "CandidateSummary", "ArchiveTopResult", "CandidateDetail", "ProposalResult",
    "SubmitTrainingResult", "JobHandle", "JobStatusResult", "JudgeResult",
]

Progress = Callable[[float, float, str], None]
"""progress(done, total, message): called by long tools between units of work."""

_CODE_DESC = (
    "Python source defining exactly one top-level function "
    "f(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta) "
    "that returns one loss per preference pair, shape (batch,). Only torch, torch.nn.functional as F and "
    "math may be used."
)
_BETA_DESC = "beta passed to the loss (DPO's inverse temperature), in (0, 10]."


# -- inputs --------------------------------------------------------------------------------------------

class CheckLossInput(BaseModel):
    code: str = Field(description=_CODE_DESC)
    beta: float = Field(0.1, gt=0, le=10, description=_BETA_DESC)


class ScreenLossInput(BaseModel):
    code: str = Field(description=_CODE_DESC)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Proxy world seeds (each >= 0).")
    betas: list[float] = Field(default_factory=lambda: [0.1], min_length=1, description="betas to screen at, each in (0, 10].")


class CompareLossesInput(BaseModel):
    codes: dict[str, str] = Field(description="Losses to compare: a short name -> its source code. DPO is added as the reference.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Proxy world seeds (each >= 0).")
    betas: list[float] = Field(default_factory=lambda: [0.1], min_length=1, description="betas to screen at, each in (0, 10].")


class PlotLossInput(BaseModel):
    code: str = Field(description=_CODE_DESC)
    beta: float = Field(0.1, gt=0, le=10, description=_BETA_DESC)


class ArchiveTopInput(BaseModel):
    run_dir: str = Field(description="A lossforge run directory (it holds archive.sqlite).")
    k: int = Field(10, ge=1, description="How many of the best evaluated candidates to return.")


class ArchiveGetInput(BaseModel):
    run_dir: str = Field(description="A lossforge run directory (it holds archive.sqlite).")
    candidate_id: int = Field(ge=1, description="The candidate's id in that run's archive.")


class ProposeFromInput(BaseModel):
    run_dir: str = Field(description="A lossforge run directory whose archive seeds the proposal.")
    hint: str | None = Field(None, max_length=2000, description="Optional guidance added to the proposer's hints.")


class SubmitTrainingInput(BaseModel):
    code: str = Field(description=_CODE_DESC)
    job_config: dict[str, Any] | None = Field(
        None,
        description="Training settings on top of the server's base job (TRL JobConfig fields), e.g. "
        '{"beta": 0.05, "learning_rate": 5e-7, "max_steps": 200}; model and dataset too if the server has no '
        "base job. Omit to train with the server's settings.",
    )


class JobStatusInput(BaseModel):
    job_id: str = Field(description="The job_id returned by submit_training (24 hex digits).")


class JudgeInput(BaseModel):
    job_id: str | None = Field(None, description="A finished training job's id (give this or answers).")
    benchmark: str = Field("mt-bench", description="'mt-bench' or 'arena-hard'.")
    answers: dict[str, list[str]] | None = Field(
        None, description="Answers to grade instead of a job: question id -> the answer to each turn."
    )


# -- results -------------------------------------------------------------------------------------------

class CheckLossResult(BaseModel):
    """The sandbox's unit-check report on one loss."""

    passed: bool
    summary: str = Field(description="'passed all checks' or the failed check with its evidence and a hint.")
    failed_check: str | None = None
    function_name: str | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0


class ScreenRun(BaseModel):
    """One proxy screen: one seed, one beta."""

    seed: int
    beta: float
    fitness: float | None = Field(None, description="True reward gain (reference std) at the KL budget; None if degenerate or failed.")
    status: str = Field(description="'evaluated', 'degenerate' (non-finite values during training) or 'failed'.")
    error: str | None = None
    final_kl: float | None = None
    final_reward_gain: float | None = None
    preference_accuracy: float | None = None
    seconds: float = 0.0


class ScreenLossResult(BaseModel):
    """Proxy fitness per (seed, beta) and their mean. Higher is better; DPO scores about 1.06."""

    passed_checks: bool
    check: CheckLossResult
    runs: list[ScreenRun] = Field(default_factory=list)
    mean_fitness: float | None = Field(None, description="Mean over runs; None unless every run was evaluated.")
    stderr: float | None = Field(None, description="Standard error of the mean (None for one run).")
    status: str = Field(description="'evaluated', 'rejected' (failed the checks), 'degenerate' or 'failed'.")
    summary: str


class CompareRow(BaseModel):
    rank: int
    name: str
    mean_fitness: float | None
    stderr: float | None = None
    delta_vs_dpo: float | None = None
    status: str
    summary: str
    is_reference: bool = False


class CompareLossesResult(BaseModel):
    """Losses ranked by mean proxy fitness (best first), DPO included as the reference."""

    rows: list[CompareRow]
    seeds: list[int]
    betas: list[float]
    details: dict[str, ScreenLossResult] = Field(default_factory=dict)


class LossCurve(BaseModel):
    rho: list[float]
    value: list[float | None]
    derivative: list[float | None]


class PlotResult(BaseModel):
    """The loss's f(rho) and df/drho next to DPO's, as a PNG and as sampled numbers."""

    png_path: str
    png_base64: str
    beta: float
    curves: dict[str, LossCurve] = Field(description="'candidate' and 'dpo': rho, f(rho), df/drho (None where not finite).")
    notes: list[str] = Field(default_factory=list)


class CandidateSummary(BaseModel):
    id: int
    name: str
    status: str
    fitness: float | None
    generation: int | None = None
    operator: str | None = None
    parent_ids: list[int] = Field(default_factory=list)
    thought: str | None = None
    code: str


class ArchiveTopResult(BaseModel):
    run_dir: str
    counts: dict[str, int]
    candidates: list[CandidateSummary]


class CandidateDetail(CandidateSummary):
    step: int
    proposer: str | None = None
    failed_check: str | None = None
    check_summary: str | None = None
    duplicate_of: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    reflection: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)


class ProposalResult(BaseModel):
    """A new candidate proposed from a run's archive; no candidate is written to the run."""

    thought: str
    name: str
    code: str
    operator: str = ""
    parent_ids: list[int] = Field(default_factory=list)
    proposer: str
    step: int
    hint: str | None = None


class SubmitTrainingResult(BaseModel):
    """A submitted training job (or a loss rejected before any job was made)."""

    job_id: str | None = Field(description="Pass it to job_status and judge; None when the loss was rejected.")
    status: str = Field(description="'queued', 'running', 'succeeded', 'failed', 'timeout', 'cancelled' or 'rejected'.")
    reused: bool = Field(False, description="True: this exact loss and config was submitted before; no new job was made.")
    launcher: str | None = None
    job_dir: str | None = None
    check: CheckLossResult | None = None
    summary: str


JobHandle = SubmitTrainingResult  # the name this result had before training landed


class JobStatusResult(BaseModel):
    """Where a training job is, and what it measured."""

    job_id: str
    status: str = Field(description="'queued', 'running', 'succeeded', 'failed', 'timeout' or 'cancelled'.")
    done: bool = Field(description="True once the job will not change any more.")
    progress: dict[str, Any] = Field(
        default_factory=dict, description="phase, step, max_steps, fraction and the last logged training metrics."
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="When finished: eval_accuracy (held-out pairs whose implicit reward margin is > 0), "
        "eval_margin (mean margin), eval_pairs, train_loss, steps, seconds.",
    )
    error: str | None = Field(None, description="Why a job did not succeed (its own error, exit code, timeout).")
    stderr_tail: str | None = Field(None, description="The end of the job's stderr when it did not succeed.")
    job_dir: str | None = None
    summary: str


class JudgeResult(BaseModel):
    """A score for a trained model (or for answers): an LLM judge's, or the job's held-out metrics."""

    job_id: str | None = None
    benchmark: str
    kind: str = Field(description="'llm_judge', or 'preference_accuracy' when no judge endpoint is configured "
                                  "or the job saved no model.")
    score: float | None = Field(None, description="MT-Bench mean rating (1-10), Arena-Hard win rate (0-1), or the "
                                                  "held-out preference accuracy (0-1); higher is better.")
    score_name: str = Field(description="'mt_bench_mean', 'arena_hard_win_rate' or 'eval_accuracy'.")
    eval_accuracy: float | None = None
    eval_margin: float | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="The judge's summary (per turn, category, CI).")
    usd: float = 0.0
    note: str = ""


# -- helpers -------------------------------------------------------------------------------------------

def _ctx(context: ToolContext | None) -> ToolContext:
    return context if context is not None else default_context()


def _validate(model: type[BaseModel], **values: Any) -> Any:
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ToolInputError(f"invalid arguments: {problems}") from None


def _check_code(code: str, ctx: ToolContext, what: str = "code") -> None:
    limit = ctx.settings.max_code_chars
    if len(code) > limit:
        raise ToolInputError(f"{what} is {len(code)} characters; the limit is {limit}. Send a shorter loss.")
    if not code.strip():
        raise ToolInputError(f"{what} is empty: send the source of one loss function.")


def _check_grid(seeds: list[int], betas: list[float], ctx: ToolContext) -> None:
    s = ctx.settings
    if len(seeds) > s.max_seeds:
        raise ToolInputError(f"{len(seeds)} seeds given; the limit is {s.max_seeds}.")
    if len(betas) > s.max_betas:
        raise ToolInputError(f"{len(betas)} betas given; the limit is {s.max_betas}.")
    if any(seed < 0 for seed in seeds):
        raise ToolInputError("seeds must be >= 0.")
    if any(not (0 < b <= 10) or not math.isfinite(b) for b in betas):
        raise ToolInputError("every beta must be in (0, 10].")
    if len(set(seeds)) != len(seeds) or len(set(betas)) != len(betas):
        raise ToolInputError("seeds and betas must not repeat.")


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _check_result(report: Any) -> CheckLossResult:
    properties = json.loads(json.dumps(report.properties, default=str, allow_nan=False)) if _json_safe(report.properties) else {
        k: str(v) for k, v in report.properties.items()
    }
    return CheckLossResult(
        passed=report.passed,
        summary=report.summary(),
        failed_check=report.failed_check,
        function_name=report.function_name,
        checks=report.checks,
        properties=properties,
        seconds=round(report.seconds, 4),
    )


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, default=str, allow_nan=False)
        return True
    except ValueError:
        return False


# -- the tools -----------------------------------------------------------------------------------------

def check_loss(code: str, beta: float = 0.1, *, context: ToolContext | None = None) -> CheckLossResult:
    """Run lossforge's unit checks on a candidate preference loss, in the sandbox (tens of milliseconds).

    The checks: the code policy (only torch, F, math; no imports of other modules, no file or network
    access, no dunder tricks), exactly one top-level function, output shape (batch,) for batch sizes
    1/3/64, finite values and gradients at extreme margins, a gradient reaching the policy log-probs,
    preferring the chosen answer, dtypes and determinism. Returns passed=True, or passed=False with the
    failed check, the evidence and a hint to fix it. Call this before screen_loss.
    """
    ctx = _ctx(context)
    args = _validate(CheckLossInput, code=code, beta=beta)
    _check_code(args.code, ctx)
    return _check_result(check_candidate(ctx.sandbox, args.code, args.beta))


def screen_loss(
    code: str,
    seeds: list[int] | None = None,
    betas: list[float] | None = None,
    *,
    context: ToolContext | None = None,
    progress: Progress | None = None,
) -> ScreenLossResult:
    """Measure a loss's proxy fitness: train a small policy with it and read the true reward gained at a KL budget.

    First runs check_loss; only a loss that passes is screened (status 'rejected' otherwise). Each
    (seed, beta) is one screen on the CPU proxy task (seconds each): a synthetic language, a hidden
    reward, a reference model and noisy preference pairs. fitness = true reward gain (in reference
    standard deviations) at KL(policy||reference) = 1 nat; higher is better, 0 means the policy did not
    move, negative means it got worse; DPO scores about 1.06 at beta 0.1. Returns every run and the mean
    (None unless all runs were evaluated).
    """
    ctx = _ctx(context)
    args = _validate(ScreenLossInput, code=code, seeds=seeds, betas=betas)
    _check_code(args.code, ctx)
    _check_grid(args.seeds, args.betas, ctx)
    total = 1 + len(args.seeds) * len(args.betas)
    if progress:
        progress(0, total, "checking")
    check = None
    for beta in args.betas:
        check = _check_result(check_candidate(ctx.sandbox, args.code, beta))
        if not check.passed:
            return ScreenLossResult(
                passed_checks=False, check=check, status="rejected",
                summary=f"rejected at beta {beta}: {check.summary}",
            )
    assert check is not None
    if progress:
        progress(1, total, "checks passed")

    settings = ctx.settings
    cache = str(settings.resolved_cache_dir())
    runs: list[ScreenRun] = []
    done = 1
    for seed in args.seeds:
        if progress:
            progress(done, total, f"preparing the proxy world of seed {seed}")
        try:
            ctx.prepare(seed)
        except Exception as error:  # noqa: BLE001 - trusted code, but report instead of crashing the caller
            raise ToolError(f"could not prepare the proxy world of seed {seed}: {type(error).__name__}: {error}") from error
        for beta in args.betas:
            screen_settings = settings.proxy.screen.model_copy(update={"beta": beta}).model_dump()
            outcome = screen_candidate(ctx.sandbox, args.code, settings.proxy.world.model_dump(), screen_settings,
                                       seed, cache, settings.screen_timeout)
            data = outcome.result or {}
            runs.append(ScreenRun(
                seed=seed, beta=beta, fitness=outcome.fitness, status=outcome.status, error=outcome.error,
                final_kl=_finite(data.get("final_kl")), final_reward_gain=_finite(data.get("final_reward_gain")),
                preference_accuracy=_finite(data.get("preference_accuracy")),
                seconds=round(float(data.get("seconds") or outcome.seconds), 3),
            ))
            done += 1
            if progress:
                last = runs[-1]
                progress(done, total, f"seed {seed} beta {beta}: {last.fitness if last.fitness is not None else last.status}")

    values = [r.fitness for r in runs if r.fitness is not None]
    if len(values) == len(runs):
        mean = statistics.fmean(values)
        err = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        status = "evaluated"
        summary = f"mean fitness {mean:.4f} over {len(runs)} run(s)" + (f" (stderr {err:.4f})" if err is not None else "")
    else:
        mean = err = None
        bad = next(r for r in runs if r.fitness is None)
        status = "failed" if any(r.status == "failed" for r in runs) else "degenerate"
        summary = f"{status} on seed {bad.seed} beta {bad.beta}: {bad.error}"
    return ScreenLossResult(passed_checks=True, check=check, runs=runs, mean_fitness=mean, stderr=err,
                            status=status, summary=summary)


def compare_losses(
    codes: dict[str, str],
    seeds: list[int] | None = None,
    betas: list[float] | None = None,
    *,
    context: ToolContext | None = None,
    progress: Progress | None = None,
) -> CompareLossesResult:
    """Screen several losses on the same proxy seeds and betas and rank them by mean fitness, DPO included.

    `codes` maps a short name to a loss's source. Each loss is checked, then screened like screen_loss
    (rejected or degenerate losses rank last). DPO (the library's source) is added as the reference row
    unless a loss is already named 'dpo'; delta_vs_dpo is each loss's mean fitness minus DPO's.
    """
    from lossforge.trainer.losses import library_code

    ctx = _ctx(context)
    args = _validate(CompareLossesInput, codes=codes, seeds=seeds, betas=betas)
    if not args.codes:
        raise ToolInputError("codes is empty: give at least one name -> loss source.")
    if len(args.codes) > ctx.settings.max_losses:
        raise ToolInputError(f"{len(args.codes)} losses given; the limit is {ctx.settings.max_losses}.")
    for name, code in args.codes.items():
        if not name.strip() or len(name) > 100:
            raise ToolInputError(f"loss names must be 1-100 characters (got {name[:40]!r}).")
        _check_code(code, ctx, what=f"the code of {name!r}")
    _check_grid(args.seeds, args.betas, ctx)

    entries = dict(args.codes)
    has_reference = "dpo" not in entries
    if has_reference:
        entries["dpo"] = library_code("dpo")
    per_loss = 1 + len(args.seeds) * len(args.betas)
    total = per_loss * len(entries)
    details: dict[str, ScreenLossResult] = {}
    for index, (name, code) in enumerate(entries.items()):
        offset = index * per_loss

        def sub(done: float, _total: float, message: str, _offset: int = offset, _name: str = name) -> None:
            if progress:
                progress(_offset + done, total, f"{_name}: {message}")

        details[name] = screen_loss(code, args.seeds, args.betas, context=ctx, progress=sub)

    dpo_mean = details["dpo"].mean_fitness
    order = sorted(details.items(), key=lambda kv: (kv[1].mean_fitness is None, -(kv[1].mean_fitness or 0.0), kv[0]))
    rows = [
        CompareRow(
            rank=rank, name=name, mean_fitness=result.mean_fitness, stderr=result.stderr,
            delta_vs_dpo=(result.mean_fitness - dpo_mean) if result.mean_fitness is not None and dpo_mean is not None else None,
            status=result.status, summary=result.summary, is_reference=(name == "dpo" and has_reference),
        )
        for rank, (name, result) in enumerate(order, 1)
    ]
    return CompareLossesResult(rows=rows, seeds=args.seeds, betas=args.betas, details=details)


def plot_loss(code: str, beta: float = 0.1, *, context: ToolContext | None = None) -> PlotResult:
    """Plot a loss's shape: f(rho) and its derivative df/drho for rho in [-4, 4], next to DPO's.

    rho = beta * ((chosen policy - reference log-ratio) - (rejected log-ratio)), the DPO logit; a good
    loss usually decreases in rho with a negative derivative near 0 (it pushes the chosen answer up).
    The curves are sampled in the sandbox. Returns the PNG's path, the PNG as base64, and the sampled
    numbers (None where a value is not finite).
    """
    from lossforge.report.run import RHOS, plot_shapes
    from lossforge.sandbox.protocol import SandboxError
    from lossforge.trainer.curves import loss_curve
    from lossforge.trainer.losses import library_code

    ctx = _ctx(context)
    args = _validate(PlotLossInput, code=code, beta=beta)
    _check_code(args.code, ctx)
    timeout = ctx.settings.plot_timeout
    try:
        candidate = ctx.sandbox.run(args.code, loss_curve, args.beta, RHOS, timeout=timeout)
    except SandboxError as error:
        raise ToolError(f"the loss could not be evaluated ({error.kind}): {error.message}") from None
    dpo = ctx.sandbox.run(library_code("dpo"), loss_curve, args.beta, RHOS, timeout=timeout)
    curves = {"candidate": candidate, "dpo": dpo}
    notes = []
    bad = sum(1 for v in candidate["value"] if not (isinstance(v, float) and math.isfinite(v)))
    if bad:
        notes.append(f"{bad} of {len(RHOS)} points of the candidate are not finite (None in the data, gaps in the plot)")
    out = ctx.output_dir() / f"loss_shape_{time.time_ns()}.png"
    plot_shapes(curves, out)
    return PlotResult(
        png_path=str(out),
        png_base64=base64.b64encode(out.read_bytes()).decode("ascii"),
        beta=args.beta,
        curves={
            name: LossCurve(rho=c["rho"], value=[_finite(v) for v in c["value"]],
                            derivative=[_finite(v) for v in c["derivative"]])
            for name, c in curves.items()
        },
        notes=notes,
    )


def _run_dir(run_dir: str, ctx: ToolContext) -> Path:
    path = Path(run_dir).expanduser().resolve()
    roots = ctx.settings.run_roots
    if roots is not None and not any(path.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise ToolInputError(f"{run_dir} is outside the run directories this server may read.")
    if not (path / "archive.sqlite").is_file():
        raise ToolInputError(f"{run_dir} is not a lossforge run directory (no archive.sqlite in it).")
    return path


def _open_archive(run_dir: str, ctx: ToolContext) -> Any:
    from lossforge.rundir.archive import Archive

    return Archive(_run_dir(run_dir, ctx) / "archive.sqlite", readonly=True)


def _summary(c: Any) -> dict[str, Any]:
    return dict(id=c.id, name=c.name, status=c.status, fitness=_finite(c.fitness), generation=c.generation,
                operator=c.operator, parent_ids=list(c.parent_ids or []), thought=c.thought, code=c.code)


def archive_top(run_dir: str, k: int = 10, *, context: ToolContext | None = None) -> ArchiveTopResult:
    """The k best evaluated candidates of a lossforge run (best first), with their code, plus counts by status.

    Reads the run's archive read-only, so it is safe while the run is going on.
    """
    ctx = _ctx(context)
    args = _validate(ArchiveTopInput, run_dir=run_dir, k=k)
    if args.k > ctx.settings.max_top_k:
        raise ToolInputError(f"k={args.k} is over the limit of {ctx.settings.max_top_k}.")
    archive = _open_archive(args.run_dir, ctx)
    try:
        return ArchiveTopResult(run_dir=args.run_dir, counts=archive.counts(),
                                candidates=[CandidateSummary(**_summary(c)) for c in archive.top(args.k)])
    finally:
        archive.close()


def archive_get(run_dir: str, candidate_id: int, *, context: ToolContext | None = None) -> CandidateDetail:
    """One candidate of a lossforge run by id: code, reasoning, check outcome, proxy result, reflection, timings.

    Reads the run's archive read-only.
    """
    from lossforge.candidate.report import CheckReport

    ctx = _ctx(context)
    args = _validate(ArchiveGetInput, run_dir=run_dir, candidate_id=candidate_id)
    archive = _open_archive(args.run_dir, ctx)
    try:
        try:
            c = archive.get(args.candidate_id)
        except KeyError:
            raise ToolInputError(f"no candidate with id {args.candidate_id} in {args.run_dir}") from None
    finally:
        archive.close()
    check_summary = None
    if c.check_report:
        try:
            check_summary = CheckReport.model_validate(c.check_report).summary()
        except ValidationError:
            check_summary = None
    return CandidateDetail(
        **_summary(c), step=c.step, proposer=c.proposer, failed_check=c.failed_check, check_summary=check_summary,
        duplicate_of=c.duplicate_of, result=json.loads(json.dumps(c.result, default=str)) if c.result else None,
        error=c.error, reflection=c.reflection, timings=c.timings or {},
    )


def propose_from(run_dir: str, hint: str | None = None, *, context: ToolContext | None = None) -> ProposalResult:
    """Propose the next candidate loss from a run's archive with the run's own configured proposer.

    Builds the same bounded view of the archive the search shows its proposer (best, recent, failures,
    pins, hints; `hint` is added to the hints) and runs the run's configured proposer (evolutionary
    genetic programming by default) at the run's next step. Returns the thought, name and code; no
    candidate is written to the run. Check and screen the code yourself (check_loss, screen_loss).
    When the run's proposer is the LLM, the call spends the run's own LLM budget: the spending so far is
    read from the run's archive, a run whose budget is exhausted is refused, and what the call costs is
    added to the run's budget there; while a search is running in that directory it is refused (the
    search holds the budget).
    """
    from lossforge.proposers.context import context_for_run
    from lossforge.proposers.factory import make_proposer
    from lossforge.config import RunConfig

    ctx = _ctx(context)
    args = _validate(ProposeFromInput, run_dir=run_dir, hint=hint)
    path = _run_dir(args.run_dir, ctx)
    config_file = path / "config.json"
    try:
        config = RunConfig.model_validate_json(config_file.read_text()) if config_file.is_file() else RunConfig()
    except ValidationError as error:
        raise ToolError(f"{config_file} is not a valid run configuration: {error.error_count()} problem(s)") from None
    archive = _open_archive(args.run_dir, ctx)
    try:
        candidates = archive.all()
        step = max((c.step for c in candidates), default=-1) + 1
        proposal_context = context_for_run(archive, step, config)
    finally:
        archive.close()
    if args.hint:
        proposal_context.hints = [*proposal_context.hints, args.hint][-5:]

    def propose(writer: Any = None) -> tuple[Any, str]:
        try:
            proposer, proposer_name = make_proposer(config, writer)
        except Exception as error:  # noqa: BLE001 - e.g. the API key's variable is not set
            raise ToolError(f"the {config.proposer.kind} proposer could not start: {error}") from None
        spent = getattr(getattr(proposer, "budget", None), "exhausted", lambda: None)()
        if spent:
            raise ToolError(
                f"the run's LLM budget is exhausted ({spent}); raise [proposer.llm.budget] in the run's "
                "configuration and continue the run with it, or use another run"
            )
        try:
            return proposer.propose(proposal_context), proposer_name
        except Exception as error:  # noqa: BLE001
            raise ToolError(f"the {proposer_name} proposer failed: {type(error).__name__}: {error}") from error

    if config.proposer.kind != "llm":
        proposal, proposer_name = propose()
    else:  # the run's budget, loaded from and saved to its archive, under the run's lock
        from lossforge.rundir.archive import Archive
        from lossforge.rundir.lock import RunDirectoryBusy, RunLock

        try:
            with RunLock(path):
                writer = Archive(path / "archive.sqlite")
                try:
                    proposal, proposer_name = propose(writer)
                finally:
                    writer.close()
        except RunDirectoryBusy:
            raise ToolError(
                f"a search is running in {args.run_dir}: with the LLM proposer, propose_from spends the run's "
                "LLM budget, which that search holds; try again when it has stopped"
            ) from None
    return ProposalResult(thought=proposal.thought, name=proposal.name, code=proposal.code, operator=proposal.operator,
                          parent_ids=list(proposal.parent_ids), proposer=proposer_name, step=step, hint=args.hint)


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

    ctx = _ctx(context)
    args = _validate(SubmitTrainingInput, code=code, job_config=job_config)
    _check_code(args.code, ctx)
    config = training.job_config(ctx, args.job_config)
    check = _check_result(check_candidate(ctx.sandbox, args.code, config.beta))
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

    ctx = _ctx(context)
    args = _validate(JobStatusInput, job_id=job_id)
    handle = training.find_job(ctx, args.job_id)
    status = ctx.launcher.status(handle)
    progress = training.read_progress(handle.job_dir)
    metrics: dict[str, Any] = {}
    error = tail = None
    if status.terminal:
        result = training.job_result(ctx, handle)
        metrics = {k: v for k, v in dict(
            eval_accuracy=_finite(result.eval_accuracy), eval_margin=_finite(result.eval_margin),
            eval_pairs=result.eval_pairs, train_loss=_finite(result.train_loss), steps=result.steps,
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
    from lossforge.evaluators.judge_run import normalise_benchmark
    from lossforge.tools import training

    ctx = _ctx(context)
    args = _validate(JudgeInput, job_id=job_id, benchmark=benchmark, answers=answers)
    try:
        bench = normalise_benchmark(args.benchmark)
    except ValueError as error:
        raise ToolInputError(str(error)) from None
    if (args.job_id is None) == (args.answers is None):
        raise ToolInputError("give exactly one of job_id (a finished training job) or answers (to grade directly).")
    score_name = "mt_bench_mean" if bench == "mt_bench" else "arena_hard_win_rate"

    def llm_result(summary: dict[str, Any], **extra: Any) -> JudgeResult:
        score = summary.get("mean") if bench == "mt_bench" else summary.get("win_rate")
        return JudgeResult(benchmark=bench, kind="llm_judge", score=_finite(score), score_name=score_name,
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
    metrics = dict(eval_accuracy=_finite(result.eval_accuracy), eval_margin=_finite(result.eval_margin))
    if ctx.settings.judge is not None and result.model_dir:
        summary = training.judge_job(ctx, handle, result.model_dir, bench)
        return llm_result(summary, job_id=args.job_id, **metrics,
                          note=f"answers of the trained model graded by {ctx.settings.judge.model}")
    why = ("no LLM judge endpoint is configured" if ctx.settings.judge is None
           else "the job saved no model to generate answers with")
    return JudgeResult(
        job_id=args.job_id, benchmark=bench, kind="preference_accuracy", score=metrics["eval_accuracy"],
        score_name="eval_accuracy", **metrics,
        details={"eval_pairs": result.eval_pairs, "train_loss": _finite(result.train_loss), "steps": result.steps},
        note=f"{why}: the score is the held-out preference accuracy of the trained model, not an LLM judge's rating",
    )


TOOLS: dict[str, tuple[Callable[..., BaseModel], type[BaseModel]]] = {
    "check_loss": (check_loss, CheckLossInput),
    "screen_loss": (screen_loss, ScreenLossInput),
    "compare_losses": (compare_losses, CompareLossesInput),
    "plot_loss": (plot_loss, PlotLossInput),
    "archive_top": (archive_top, ArchiveTopInput),
    "archive_get": (archive_get, ArchiveGetInput),
    "propose_from": (propose_from, ProposeFromInput),
    "submit_training": (submit_training, SubmitTrainingInput),
    "job_status": (job_status, JobStatusInput),
    "judge": (judge, JudgeInput),
}
"""Every tool: name -> (function, input model). The order is the order servers list them in."""
