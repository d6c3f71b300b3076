"""The loss tools: check a loss, screen it on the proxy, compare losses against DPO, plot its shape.

Candidate code never runs in this process: checks and screens go through `tools.core` (the code path
the search's own nodes use) and the shape through `tools.shapes`, all in the context's sandbox.
`screen_loss` screens only code that passed the checks, and a bad candidate is a result
(`passed=False`, status 'rejected'), not an exception. `screen_loss` and `compare_losses` report their
steps to an optional `progress(done, total, message)` callback.
"""
from __future__ import annotations

import base64
import math
import statistics
import time
from typing import Callable

from lossforge.tools.arguments import check_code, check_grid, tool_context, validate
from lossforge.tools.context import ToolContext, ToolError, ToolInputError
from lossforge.tools.core import check_candidate, screen_candidate
from lossforge.tools.schemas import (
    CheckLossInput,
    CheckLossResult,
    CompareLossesInput,
    CompareLossesResult,
    CompareRow,
    LossCurve,
    PlotLossInput,
    PlotResult,
    ScreenLossInput,
    ScreenLossResult,
    ScreenRun,
    check_result,
    finite,
)

__all__ = ["check_loss", "screen_loss", "compare_losses", "plot_loss", "Progress"]

Progress = Callable[[float, float, str], None]
"""progress(done, total, message): called by long tools between units of work."""


def check_loss(code: str, beta: float = 0.1, *, context: ToolContext | None = None) -> CheckLossResult:
    """Run lossforge's unit checks on a candidate preference loss, in the sandbox (tens of milliseconds).

    The checks: the code policy (only torch, F, math; no imports of other modules, no file or network
    access, no dunder tricks), exactly one top-level function, output shape (batch,) for batch sizes
    1/3/64, finite values and gradients at extreme margins, a gradient reaching the policy log-probs,
    preferring the chosen answer, dtypes and determinism. Returns passed=True, or passed=False with the
    failed check, the evidence and a hint to fix it. Call this before screen_loss.
    """
    ctx = tool_context(context)
    args = validate(CheckLossInput, code=code, beta=beta)
    check_code(args.code, ctx)
    return check_result(check_candidate(ctx.sandbox, args.code, args.beta))


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
    ctx = tool_context(context)
    args = validate(ScreenLossInput, code=code, seeds=seeds, betas=betas)
    check_code(args.code, ctx)
    check_grid(args.seeds, args.betas, ctx)
    total = 1 + len(args.seeds) * len(args.betas)
    if progress:
        progress(0, total, "checking")
    check = None
    for beta in args.betas:
        check = check_result(check_candidate(ctx.sandbox, args.code, beta))
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
                final_kl=finite(data.get("final_kl")), final_reward_gain=finite(data.get("final_reward_gain")),
                preference_accuracy=finite(data.get("preference_accuracy")),
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

    ctx = tool_context(context)
    args = validate(CompareLossesInput, codes=codes, seeds=seeds, betas=betas)
    if not args.codes:
        raise ToolInputError("codes is empty: give at least one name -> loss source.")
    if len(args.codes) > ctx.settings.max_losses:
        raise ToolInputError(f"{len(args.codes)} losses given; the limit is {ctx.settings.max_losses}.")
    for name, code in args.codes.items():
        if not name.strip() or len(name) > 100:
            raise ToolInputError(f"loss names must be 1-100 characters (got {name[:40]!r}).")
        check_code(code, ctx, what=f"the code of {name!r}")
    check_grid(args.seeds, args.betas, ctx)

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
    from lossforge.sandbox.protocol import SandboxError
    from lossforge.tools.shapes import dpo_shape, loss_shape, plot_shapes
    from lossforge.trainer.curves import RHOS

    ctx = tool_context(context)
    args = validate(PlotLossInput, code=code, beta=beta)
    check_code(args.code, ctx)
    timeout = ctx.settings.plot_timeout
    try:
        candidate = loss_shape(ctx.sandbox, args.code, args.beta, timeout=timeout)
    except SandboxError as error:
        raise ToolError(f"the loss could not be evaluated ({error.kind}): {error.message}") from None
    dpo = dpo_shape(ctx.sandbox, args.beta, timeout=timeout)
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
            name: LossCurve(rho=c["rho"], value=[finite(v) for v in c["value"]],
                            derivative=[finite(v) for v in c["derivative"]])
            for name, c in curves.items()
        },
        notes=notes,
    )
