"""What a proposer is shown: a bounded selection of the archive, never the whole history.

The selection is the best candidates, the most recent evaluated ones, and the most recent failures with
their check reports and reflections, plus the user's hints and pins. Its size does not grow with the
run, so a proposal costs the same at step 10 and at step 10,000.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lossforge.candidate.status import CandidateStatus
from lossforge.rundir.archive import Archive, Candidate
from lossforge.proposers.base import ArchiveView, ProposalContext

if TYPE_CHECKING:
    from lossforge.config import RunConfig


def view(candidate: Candidate) -> ArchiveView:
    check_summary = None
    if candidate.check_report and not candidate.check_report.get("passed", True):
        failed = next((c for c in candidate.check_report.get("checks", []) if not c.get("passed")), None)
        if failed:
            check_summary = f"failed check '{failed['name']}': {failed.get('evidence', '')} {failed.get('hint', '')}".strip()
    return ArchiveView(
        id=candidate.id,
        name=candidate.name,
        code=candidate.code,
        status=candidate.status,
        fitness=candidate.fitness,
        fitness_stderr=candidate.fitness_stderr,
        genome=candidate.genome,
        check_summary=check_summary or candidate.error,
        reflection=candidate.reflection,
    )


def build_context(
    archive: Archive,
    step: int,
    seed: int,
    beta: float,
    n_best: int = 16,
    n_recent: int = 16,
    n_failures: int = 4,
) -> ProposalContext:
    """The proposer's view of the archive at `step`."""
    steering = archive.get_meta("steering", {}) or {}
    pinned = [int(i) for i in steering.get("pinned", [])]
    best = [view(c) for c in archive.top(n_best)]
    shown = {v.id for v in best}
    for candidate_id in pinned:
        if candidate_id not in shown:
            try:
                best.append(view(archive.get(candidate_id)))
            except KeyError:
                continue
    return ProposalContext(
        step=step,
        seed=seed,
        beta=beta,
        best=best,
        recent=[view(c) for c in archive.recent(n_recent)],
        failures=[view(c) for c in archive.recent(
            n_failures, statuses=(CandidateStatus.REJECTED, CandidateStatus.FAILED, CandidateStatus.DEGENERATE))],
        excluded_ids=[int(i) for i in steering.get("excluded", [])],
        pinned_ids=pinned,
        hints=[str(h) for h in steering.get("hints", [])][-5:],
    )


def context_for_run(archive: Archive, step: int, config: "RunConfig") -> ProposalContext:
    """`build_context` with the run's seed, beta and the betas its fitness reads ([proxy.fitness]); the
    search's propose node and the `propose_from` tool both use it, so a proposer sees the same either way."""
    context = build_context(archive, step, config.search.seed, config.proxy.screen.beta)
    fitness = config.proxy.fitness
    if fitness.variants:
        context.fitness_betas = [s.beta for s in fitness.settings(config.proxy.screen)]
        context.fitness_aggregate = fitness.aggregate
    return context
