"""[search] seed_losses: a run seeded with imported losses (real importer, real sandbox and tiny proxy)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lossforge.rundir.archive import Archive
from lossforge.proposers.gp.evolution import EvolutionaryProposer
from lossforge.proposers.base import ArchiveView, ProposalContext
from lossforge.proposers.factory import make_proposer
from lossforge.agent.runner import run_search
from lossforge.proposers.seeding import SeededProposer
from lossforge.config import ConfigError, load_config
from lossforge.candidate.importer import seed_candidates
from tests.conftest import tiny_config_toml

FIXTURES = Path(__file__).resolve().parents[1] / "candidate" / "fixtures"
SEEDS = FIXTURES / "discopop_form" / "discovery_seeds.py"  # four seeds in the form of DiscoPOP's discovery seeds
TRL_086 = FIXTURES / "trl" / "dpo_loss_trl_0_8_6.py"


def test_seeds_come_first_then_the_proposers_own_from_its_step_zero() -> None:
    seeds = seed_candidates([SEEDS, TRL_086])
    inner = EvolutionaryProposer(seed=0)
    proposer = SeededProposer(inner, seeds)
    names = [proposer.propose(ProposalContext(step=i)).name for i in range(6)]
    assert names[:5] == ["logistic_log_loss", "hinge_loss", "ipo_loss", "kto_pair_loss", "dpo_loss"]
    assert names[5] == inner.propose(ProposalContext(step=0)).name  # the evolution's first library seed
    first = proposer.propose(ProposalContext(step=0))
    assert first.operator == "seed" and first.code == seeds[0].code and "discovery_seeds.py" in first.thought
    # a seed already in the archive is not proposed again; a repair goes to the inner proposer
    shown = ArchiveView(id=1, name="logistic_log_loss", code=seeds[0].code, status="evaluated", fitness=0.1)
    assert proposer.propose(ProposalContext(step=0, recent=[shown])).name == "hinge_loss"
    repair = ProposalContext(step=1, repair_of=shown)
    assert proposer.propose(repair).name == inner.propose(repair.model_copy(update={"step": 0})).name


def test_config_validates_seed_files(tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'[search]\nseed_losses = ["{SEEDS}"]\n')
    assert load_config(config).search.seed_losses == [SEEDS]
    proposer, name = make_proposer(load_config(config))
    assert isinstance(proposer, SeededProposer) and name == "evolution" and len(proposer.seeds) == 4
    config.write_text(f'[search]\nseed_losses = ["{tmp_path / "missing.py"}"]\n')
    with pytest.raises(ConfigError, match=r"search.seed_losses: .*missing.py is not a file"):
        load_config(config)
    config.write_text(f'[search]\nseed_losses = ["{FIXTURES / "trl" / "compute_loss_override.py"}"]\n')
    with pytest.raises(ConfigError, match="works on the model and the batch"):
        load_config(config)
    assert not isinstance(make_proposer(load_config(None))[0], SeededProposer)


@pytest.mark.slow
def test_a_run_is_seeded_with_imported_losses(tmp_path, cache_dir) -> None:
    config = tmp_path / "run.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=2, extra=f'seed_losses = ["{SEEDS}"]'))
    summary = run_search(tmp_path / "run", load_config(config))
    assert summary.evaluated == 2
    archive = Archive(tmp_path / "run" / "archive.sqlite", readonly=True)
    evaluated = sorted((c for c in archive.all() if c.generation is not None), key=lambda c: c.generation)
    assert [c.name for c in evaluated] == ["logistic_log_loss", "hinge_loss"]
    assert all(c.fitness is not None and c.check_report["passed"] for c in evaluated)
    assert evaluated[0].code == seed_candidates([SEEDS])[0].code
