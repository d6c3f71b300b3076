"""The tool API's argument and result models: what an LLM sees of each tool, and what it gets back.

One `*Input` model per tool (its fields are the tool function's parameters; their descriptions are the
argument descriptions an LLM reads over MCP and LangChain) and the pydantic result models the tools
return. `check_result` turns a sandbox check report into the `CheckLossResult` the tools share and
`finite` turns a number that is not finite into None (JSON has no NaN). No tool logic lives here.
"""
from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, Field

from lossforge.candidate.report import CheckResult

__all__ = [
    # inputs
    "CheckLossInput", "ScreenLossInput", "CompareLossesInput", "PlotLossInput", "ArchiveTopInput",
    "ArchiveGetInput", "ProposeFromInput", "SubmitTrainingInput", "JobStatusInput", "JudgeInput",
    # results
    "CheckLossResult", "ScreenRun", "ScreenLossResult", "CompareRow", "CompareLossesResult", "LossCurve",
    "PlotResult", "CandidateSummary", "ArchiveTopResult", "CandidateDetail", "ProposalResult",
    "SubmitTrainingResult", "JobHandle", "JobStatusResult", "JudgeResult",
    # conversions
    "check_result", "finite",
]

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


# -- conversions into results --------------------------------------------------------------------------

def finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def check_result(report: Any) -> CheckLossResult:
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
