"""The graph's routing with a scripted proposer: rejected, duplicate and failed proposals never reach
the screen, and the stopping rules end the search."""
from __future__ import annotations

from lossforge.rundir.archive import Archive
from lossforge.proposers.base import Proposal, ProposalContext
from lossforge.agent.runner import run_search
from lossforge.trainer.losses import library_code

DPO = library_code("dpo")
PREFERS_REJECTED = """
import torch.nn.functional as F

def backwards(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return F.softplus(beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)))
"""
SHIFTED_DPO = """
import torch.nn.functional as F

def shifted(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    return F.softplus(-rho) + 3.0
"""


class ScriptedProposer:
    """Returns the scripted proposals in order; raises when told to (a broken proposer)."""

    def __init__(self, script: list[Proposal | Exception]) -> None:
        self.script = script
        self.contexts: list[ProposalContext] = []

    def propose(self, context: ProposalContext) -> Proposal:
        self.contexts.append(context)
        item = self.script[min(context.step, len(self.script) - 1)]
        if isinstance(item, Exception):
            raise item
        return item


def test_rejected_duplicate_and_failed_proposals_are_recorded_and_skipped(tmp_path, tiny_run_config) -> None:
    proposer = ScriptedProposer(
        [
            Proposal(thought="the baseline", name="dpo", code=DPO),
            Proposal(thought="same code", name="dpo_again", code=DPO + "\n"),
            Proposal(thought="dpo plus a constant", name="shifted", code=SHIFTED_DPO),
            Proposal(thought="wrong direction", name="backwards", code=PREFERS_REJECTED),
            RuntimeError("the proposer broke"),
            Proposal(thought="a real second one", name="ipo", code=library_code("ipo")),
        ]
    )
    config = tiny_run_config.model_copy(update={"search": tiny_run_config.search.model_copy(update={"generations": 2})})
    summary = run_search(tmp_path, config, proposer=proposer)
    assert summary.evaluated == 2
    archive = Archive(tmp_path / "archive.sqlite", readonly=True)
    by_name = {c.name: c for c in archive.all()}
    assert by_name["dpo"].status == "evaluated" and by_name["ipo"].status == "evaluated"
    assert by_name["dpo_again"].status == "duplicate" and by_name["dpo_again"].duplicate_of == by_name["dpo"].id
    assert by_name["shifted"].status == "duplicate" and by_name["shifted"].duplicate_of == by_name["dpo"].id
    assert by_name["backwards"].status == "rejected" and by_name["backwards"].failed_check == "prefers_chosen"
    failed = by_name["failed-proposal"]
    assert failed.status == "failed" and "the proposer broke" in failed.error
    for name in ("dpo_again", "shifted", "backwards", "failed-proposal"):
        assert by_name[name].result is None and by_name[name].reflection  # never screened, always reflected on
    # the rejection reached the next proposal's context with its evidence
    assert any("prefers_chosen" in (f.check_summary or "") for f in proposer.contexts[-1].failures)


def test_a_proposer_that_only_repeats_itself_stalls_the_search_cleanly(tmp_path, tiny_run_config) -> None:
    proposer = ScriptedProposer([Proposal(thought="again", name="dpo", code=DPO)])
    search = tiny_run_config.search.model_copy(update={"generations": 3, "max_proposals_per_generation": 4})
    summary = run_search(tmp_path, tiny_run_config.model_copy(update={"search": search}), proposer=proposer)
    assert summary.evaluated == 1
    assert summary.stop_reason.startswith("stalled")


def test_target_fitness_stops_the_search(tmp_path, tiny_run_config) -> None:
    search = tiny_run_config.search.model_copy(update={"generations": 5, "target_fitness": -100.0})
    summary = run_search(tmp_path, tiny_run_config.model_copy(update={"search": search}))
    assert summary.evaluated == 1 and summary.stop_reason == "target fitness"
