"""`lossforge.candidate.importer`: losses in the forms people have, brought into the candidate form.

Inputs (tests/candidate/fixtures, each with its source and licence): TRL's ``DPOTrainer.dpo_loss`` of
0.8.6 (old argument names) and 0.13.0 (new names, ``f_divergence``, ``self.args``, ``.to(device)``) from
the PyPI wheels, the ``compute_loss`` override documented for Hugging Face trainers, and, written for these
tests in the form of DiscoPOP's code (no upstream code kept), a trainer like its GPOTrainer
(src/alignment/gpo.py: the paper's seven discovered losses and the baselines, a loss_type dispatcher,
``dpo_loss`` returning a tuple) and seeds like those of its discovery script (scripts/launch_evo.py).
Each imported loss is checked in the real sandbox and compared numerically with the source method run as
written (compiled alone, bound to a stub trainer with ``beta`` and TRL's defaults) and with the library
loss it is (whose discovered losses tests/trainer/test_losses.py checks against the published code's values).
"""
from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossforge.candidate.importer import ImportError_, import_file, import_hint, import_losses, parse_settings
from lossforge.sandbox.process import ProcessSandbox
from lossforge.trainer.losses import LIBRARY
from tests.support import exec_candidate

FIXTURES = Path(__file__).parent / "fixtures"
GPO = FIXTURES / "discopop_form" / "trainer_methods.py"  # DiscoPOP's trainer form, written for the tests
SEEDS = FIXTURES / "discopop_form" / "discovery_seeds.py"  # DiscoPOP's discovery seeds' form, written for the tests
TRL_086 = FIXTURES / "trl" / "dpo_loss_trl_0_8_6.py"
TRL_0130 = FIXTURES / "trl" / "dpo_loss_trl_0_13_0.py"
COMPUTE_LOSS = FIXTURES / "trl" / "compute_loss_override.py"

#: Every loss method of the DiscoPOP-form trainer (all but the two dispatchers, gpo_loss and dpo_loss), and
#: the library loss each one is.
GPO_LOSSES = {
    "log_ratio_modulated_loss": "discopop", "performance_adaptive_decay_logistic_loss": "padll",
    "adaptive_quantile_feedback_loss": "aqfl", "combined_exp_logistic_loss": "cell",
    "dynamic_blended_adaptive_quantile_loss": "dbaql", "adaptive_quantile_loss": "aql", "policy_focused_loss": "pfl",
    "sigmoid_loss": "dpo", "hinge_loss": "slic", "ipo_loss": "ipo", "kto_pair_loss": "kto_pair", "bco_pair_loss": "bco_pair",
}


@pytest.fixture(scope="module")
def sandbox():
    box = ProcessSandbox()
    yield box
    box.close()


def _inputs(batch: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-60.0 + 55.0 * torch.rand(batch, generator=g, dtype=torch.float64) for _ in range(4)]


def _method(path: Path, name: str, **namespace):
    """A method of the fixture's class compiled alone, as written (the module imports trl)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    ns = {"torch": torch, "F": F, "Tuple": tuple, **namespace}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
    return ns[name]


def _trainer(beta: float, **attrs) -> types.SimpleNamespace:
    """A stub trainer with TRL's DPOConfig defaults, as the source methods read them."""
    base = dict(beta=beta, label_smoothing=0.0, loss_type="sigmoid", reference_free=False,
                accelerator=types.SimpleNamespace(device=torch.device("cpu")))
    base.update(attrs)
    trainer = types.SimpleNamespace(**base)
    trainer.args = trainer
    return trainer


# --------------------------------------------------------------------------------------------------
# DiscoPOP's forms: every loss of a trainer like its GPOTrainer and seeds like its discovery script's
# --------------------------------------------------------------------------------------------------


def test_every_discopop_trainer_loss_imports_and_passes_the_checks(sandbox) -> None:
    result = import_file(GPO)
    assert [loss.name for loss in result.imported] == list(GPO_LOSSES)
    for loss in result.imported:
        report = sandbox.check(loss.code, beta=0.05)  # the paper's beta
        assert report.passed, (loss.name, report.summary())
        assert any("self.beta -> the parameter beta" in c for c in loss.changes)
        assert "type annotations dropped" in loss.changes
        assert '"""' not in loss.code.split('"""', 2)[2]  # the method's docstring is not kept in the body
    # the two dispatchers are refused, each with the reason
    refused = dict(result.refused)
    assert set(refused) == {"DiscoveredLossTrainer.gpo_loss", "DiscoveredLossTrainer.dpo_loss"}
    assert "self.sigmoid_loss(...)" in refused["DiscoveredLossTrainer.gpo_loss"]  # loss_type defaults to "sigmoid"
    assert "self.gpo_loss(...)" in refused["DiscoveredLossTrainer.dpo_loss"] \
        and "Import the loss it computes" in refused["DiscoveredLossTrainer.dpo_loss"]


@pytest.mark.parametrize("name", GPO_LOSSES)
def test_imported_discopop_losses_compute_what_the_source_methods_do(name) -> None:
    (loss,) = import_file(GPO, function=name).imported
    ours = exec_candidate(loss.code)
    source = _method(GPO, name)
    trainer = _trainer(0.05, running=types.SimpleNamespace(mean=0.0, update=lambda value: None))
    xs = _inputs()
    want = source(trainer, *xs)
    if name == "kto_pair_loss":  # source: the two halves concatenated (2 * batch); imported: their pair mean
        assert want.shape == (16,)
        want = 0.5 * (want[:8] + want[8:])
    torch.testing.assert_close(ours(*xs, 0.05), want)
    # and the library loss it is (the discovered ones pinned to the published code's values in test_losses.py)
    torch.testing.assert_close(ours(*xs, 0.05), LIBRARY[GPO_LOSSES[name]](*xs, 0.05))


def test_discopop_changes_are_stated() -> None:
    by_name = {loss.name: loss for loss in import_file(GPO).imported}
    assert any("import torch.nn.functional as F" in c for c in by_name["adaptive_quantile_feedback_loss"].changes)
    assert any("self.label_smoothing = 0.0 (TRL DPOConfig default)" in c for c in by_name["sigmoid_loss"].changes)
    assert any("torch.cat" in c and "0.5 * (A + B)" in c for c in by_name["kto_pair_loss"].changes)
    bco = by_name["bco_pair_loss"]
    assert any("self.running.mean" in c and "departure" in c for c in bco.changes)
    assert any("self.running.update(rewards)" in c for c in bco.changes)
    # the changes are in the module docstring of the candidate too
    assert all(c in ast.get_docstring(ast.parse(bco.code)) for c in bco.changes)


def test_the_seeds_of_discopops_discovery_script_import_and_equal_the_library(sandbox) -> None:
    result = import_file(SEEDS)
    assert not result.refused
    names = [loss.name for loss in result.imported]
    assert names == ["logistic_log_loss", "hinge_loss", "ipo_loss", "kto_pair_loss"]
    xs = _inputs(seed=3)
    for loss, library in zip(result.imported, ("dpo", "slic", "ipo", "kto_pair")):
        assert sandbox.check(loss.code).passed, loss.name
        torch.testing.assert_close(exec_candidate(loss.code)(*xs, 0.1), LIBRARY[library](*xs, 0.1))


# --------------------------------------------------------------------------------------------------
# TRL: the older dpo_loss override and the newer argument names
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type,library,extra", [
    ("sigmoid", "dpo", {}), ("hinge", "slic", {}), ("ipo", "ipo", {}), ("kto_pair", "kto_pair", {}),
])
def test_trl_0_8_dpo_loss_override_imports_per_loss_type(sandbox, loss_type, library, extra) -> None:
    settings = {} if loss_type == "sigmoid" else {"loss_type": loss_type}
    (loss,) = import_file(TRL_086, settings=settings).imported
    assert "returned the tuple (losses, chosen_rewards, rejected_rewards); only its first item, the losses, is kept" \
        in loss.changes
    assert sandbox.check(loss.code).passed
    xs = _inputs(seed=5)
    published = _method(TRL_086, "dpo_loss")(_trainer(0.1, loss_type=loss_type), *xs)[0]
    ours = exec_candidate(loss.code)(*xs, 0.1)
    if loss_type == "kto_pair":
        published = 0.5 * (published[:8] + published[8:])
    torch.testing.assert_close(ours, published)
    torch.testing.assert_close(ours, LIBRARY[library](*xs, 0.1))


def test_trl_0_8_loss_type_it_does_not_have_is_refused() -> None:
    result = import_file(TRL_086, settings={"loss_type": "exo_pair"})
    assert not result.imported
    (qualname, why), = result.refused
    assert "always raises with self.loss_type = 'exo_pair'" in why and "Unknown loss type" in why


@pytest.mark.parametrize("loss_type,library,settings", [
    ("sigmoid", "dpo", {}), ("robust", "robust_dpo", {"label_smoothing": 0.1}), ("exo_pair", "exo_pair", {}),
    ("hinge", "slic", {}), ("bco_pair", "bco_pair", {}), ("sppo_hard", "sppo_hard", {}), ("nca_pair", "nca_pair", {}),
    ("aot", "aot_pair", {}), ("apo_zero", "apo_zero", {}), ("discopop", "discopop", {}),
])
def test_trl_0_13_dpo_loss_with_new_names_imports_per_loss_type(sandbox, loss_type, library, settings) -> None:
    (loss,) = import_file(TRL_0130, settings={"loss_type": loss_type, **settings}).imported
    assert any(c.startswith("TRL's argument names renamed: chosen_logps -> policy_chosen_logps") for c in loss.changes)
    report = sandbox.check(loss.code)
    assert report.passed, report.summary()
    xs = _inputs(seed=6)
    torch.testing.assert_close(exec_candidate(loss.code)(*xs, 0.1), LIBRARY[library](*xs, 0.1))


def test_a_function_with_trls_newer_names() -> None:
    source = (
        "import torch.nn.functional as nnf\nfrom torch.nn.functional import logsigmoid\n\nTAU = 0.5\n\n"
        "def my_loss(chosen_logps: 'Tensor', rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, scale=2.0):\n"
        "    margin = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)\n"
        "    return -scale * TAU * logsigmoid(beta * margin) + 0.0 * nnf.relu(margin)\n"
    )
    (loss,) = import_losses(source).imported
    assert "scale = 2.0 (its default)" in " ".join(loss.changes)
    assert "module-level constants copied into the body: TAU" in loss.changes
    xs = _inputs(seed=7)
    torch.testing.assert_close(exec_candidate(loss.code)(*xs, 0.1), LIBRARY["dpo"](*xs, 0.1))
    assert "F.logsigmoid(" in loss.code and "nnf" not in loss.code.split('"""')[-1]


# --------------------------------------------------------------------------------------------------
# What cannot be imported is refused with the reason
# --------------------------------------------------------------------------------------------------


def test_compute_loss_on_the_model_is_refused_with_the_reason() -> None:
    result = import_file(COMPUTE_LOSS)
    assert not result.imported
    (qualname, why), = result.refused
    assert qualname == "CustomTrainer.compute_loss"
    assert "works on the model and the batch" in why and "not on log-probs" in why


@pytest.mark.parametrize("body,needle", [
    ("return -F.logsigmoid(self.my_temperature * (policy_chosen_logps - policy_rejected_logps))",
     "reads self.my_temperature, which has no known default"),
    ("return -F.logsigmoid(np.float32(self.beta) * (policy_chosen_logps - policy_rejected_logps))",
     "uses `np` from numpy"),
    ("return self.helper(policy_chosen_logps)", "calls the trainer's own method self.helper(...)"),
])
def test_what_needs_the_trainer_or_other_modules_is_refused(body, needle) -> None:
    source = ("import numpy as np\nimport torch.nn.functional as F\n\nclass T:\n"
              "    def my_loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
              f"reference_rejected_logps):\n        {body}\n")
    result = import_losses(source)
    assert not result.imported and needle in result.refused[0][1], result.refused


def test_an_unknown_attribute_imports_with_a_given_value() -> None:
    source = ("class T:\n    def my_loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
              "reference_rejected_logps):\n        return -F.logsigmoid(self.my_temperature * self.beta * "
              "((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)))\n")
    (loss,) = import_losses(source, settings=parse_settings(["my_temperature=1.0"])).imported
    assert "self.my_temperature = 1.0 (given)" in " ".join(loss.changes)
    xs = _inputs()
    torch.testing.assert_close(exec_candidate(loss.code)(*xs, 0.1), LIBRARY["dpo"](*xs, 0.1))


def test_usage_errors() -> None:
    with pytest.raises(ImportError_, match="has no loss function to import"):
        import_losses("def f(x):\n    return x\n")
    with pytest.raises(ImportError_, match="line 1"):
        import_losses("def f(:\n")
    with pytest.raises(ImportError_, match="has no function 'nope'; its functions are: DiscoveredLossTrainer.__init__"):
        import_file(GPO, function="nope")
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_settings(["loss_type"])
    assert parse_settings(["loss_type=hinge", "label_smoothing=0.1"]) == {"loss_type": "hinge", "label_smoothing": 0.1}


def test_a_candidate_passes_through_unchanged_and_check_points_at_import() -> None:
    from lossforge.trainer.losses import library_code

    code = library_code("dpo")
    (loss,) = import_losses(code).imported
    assert loss.code == code and loss.changes == []
    assert import_hint(code) is None
    hint = import_hint(SEEDS.read_text())
    assert hint and "lossforge import FILE -o OUT.py" in hint and "logistic_log_loss" in hint
