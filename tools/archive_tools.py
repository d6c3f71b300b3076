"""The archive tools: read a search run's archive (the best candidates, one candidate) and propose from it.

`archive_top` and `archive_get` open the run's archive read-only, so they are safe while the run goes
on. `propose_from` writes no candidate to the run; with the LLM proposer it spends the run's own LLM
budget, kept in the archive, under the run's lock. A run directory that is not one (no archive.sqlite)
or lies outside `settings.run_roots` raises `ToolInputError`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossforge.tools.arguments import tool_context, validate
from lossforge.tools.context import ToolContext, ToolError, ToolInputError
from lossforge.tools.schemas import (
    ArchiveGetInput,
    ArchiveTopInput,
    ArchiveTopResult,
    CandidateDetail,
    CandidateSummary,
    ProposalResult,
    ProposeFromInput,
    finite,
)

__all__ = ["archive_top", "archive_get", "propose_from"]


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
    return dict(id=c.id, name=c.name, status=c.status, fitness=finite(c.fitness), generation=c.generation,
                operator=c.operator, parent_ids=list(c.parent_ids or []), thought=c.thought, code=c.code)


def archive_top(run_dir: str, k: int = 10, *, context: ToolContext | None = None) -> ArchiveTopResult:
    """The k best evaluated candidates of a lossforge run (best first), with their code, plus counts by status.

    Reads the run's archive read-only, so it is safe while the run is going on.
    """
    ctx = tool_context(context)
    args = validate(ArchiveTopInput, run_dir=run_dir, k=k)
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

    ctx = tool_context(context)
    args = validate(ArchiveGetInput, run_dir=run_dir, candidate_id=candidate_id)
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

    ctx = tool_context(context)
    args = validate(ProposeFromInput, run_dir=run_dir, hint=hint)
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
