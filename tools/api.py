"""The tool API: plain typed functions over the sandbox, the proxy and a run's archive.

Every function takes its arguments as plain values (validated by the matching `*Input` model, whose
field descriptions are what an LLM sees), an optional `context: ToolContext` (default: a process-wide
one created on first use), and returns a pydantic `*Result` model. The same functions are served over
MCP (`lossforge.tools.mcp_server`) and as LangChain tools (`lossforge.tools.langchain_tools`), both
generated from `TOOLS`, the registry below.

This module is the package face of the tool API (import it as `from lossforge.tools import api`): the
`Tool` registry and the names of the modules that hold the code: `tools.schemas` (the `*Input` and
result models), `tools.loss_tools` (check, screen, compare, plot), `tools.archive_tools` (archive_top,
archive_get, propose_from) and `tools.training_tools` (submit_training, job_status, judge).

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

import inspect
import typing
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

from lossforge.tools.archive_tools import archive_get, archive_top, propose_from
from lossforge.tools.loss_tools import Progress, check_loss, compare_losses, plot_loss, screen_loss
from lossforge.tools.schemas import (
    ArchiveGetInput,
    ArchiveTopInput,
    ArchiveTopResult,
    CandidateDetail,
    CandidateSummary,
    CheckLossInput,
    CheckLossResult,
    CompareLossesInput,
    CompareLossesResult,
    CompareRow,
    JobHandle,
    JobStatusInput,
    JobStatusResult,
    JudgeInput,
    JudgeResult,
    LossCurve,
    PlotLossInput,
    PlotResult,
    ProposalResult,
    ProposeFromInput,
    ScreenLossInput,
    ScreenLossResult,
    ScreenRun,
    SubmitTrainingInput,
    SubmitTrainingResult,
)
from lossforge.tools.training_tools import job_status, judge, submit_training

__all__ = [
    # the registry
    "Tool", "TOOLS", "Progress",
    # functions
    "check_loss", "screen_loss", "compare_losses", "plot_loss", "archive_top", "archive_get", "propose_from",
    "submit_training", "job_status", "judge",
    # inputs
    "CheckLossInput", "ScreenLossInput", "CompareLossesInput", "PlotLossInput", "ArchiveTopInput",
    "ArchiveGetInput", "ProposeFromInput", "SubmitTrainingInput", "JobStatusInput", "JudgeInput",
    # results
    "CheckLossResult", "ScreenRun", "ScreenLossResult", "CompareRow", "CompareLossesResult", "LossCurve",
    "PlotResult", "CandidateSummary", "ArchiveTopResult", "CandidateDetail", "ProposalResult",
    "SubmitTrainingResult", "JobHandle", "JobStatusResult", "JudgeResult",
]

#: Keyword parameters of a tool function that are not the tool's arguments: the caller provides them.
CALLER_PARAMETERS = ("context", "progress")


@dataclass(frozen=True)
class Tool:
    """One tool: its name, its function, its input model (the function's arguments, with the descriptions
    an LLM reads) and whether the function reports its steps to a `progress(done, total, message)` keyword.

    The function's other keyword is `context: ToolContext | None`; its arguments are exactly the input
    model's fields, in order (a test checks it); its result model is its return annotation."""

    name: str
    fn: Callable[..., BaseModel]
    input: type[BaseModel]
    progress: bool = False

    @property
    def description(self) -> str:
        """The function's docstring: what an LLM reads about the tool."""
        return inspect.cleandoc(self.fn.__doc__ or self.name)

    @property
    def result(self) -> type[BaseModel]:
        """The result model (the function's return annotation)."""
        return typing.get_type_hints(self.fn)["return"]

    def parameters(self) -> list[str]:
        """The function's argument names, in order (without the caller's `context` and `progress`)."""
        return [name for name in inspect.signature(self.fn).parameters if name not in CALLER_PARAMETERS]


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("check_loss", check_loss, CheckLossInput),
    Tool("screen_loss", screen_loss, ScreenLossInput, progress=True),
    Tool("compare_losses", compare_losses, CompareLossesInput, progress=True),
    Tool("plot_loss", plot_loss, PlotLossInput),
    Tool("archive_top", archive_top, ArchiveTopInput),
    Tool("archive_get", archive_get, ArchiveGetInput),
    Tool("propose_from", propose_from, ProposeFromInput),
    Tool("submit_training", submit_training, SubmitTrainingInput),
    Tool("job_status", job_status, JobStatusInput),
    Tool("judge", judge, JudgeInput),
)}
"""Every tool by name; the order is the order servers list them in."""
