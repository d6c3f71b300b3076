"""The check suite: good losses pass every check and get a fingerprint; broken ones fail the named check."""
from __future__ import annotations

import pytest

from lossforge.candidate.checks import CHECK_NAMES, run_checks
from lossforge.candidate.fingerprint import FINGERPRINT_LENGTH

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
PREAMBLE = "import math\nimport torch\nimport torch.nn.functional as F\n\n"
MARGIN = "rho = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))"


def loss(body: str, name: str = "candidate") -> str:
    lines = "\n".join("    " + line for line in [MARGIN, *body.strip("\n").splitlines()])
    return f"{PREAMBLE}def {name}({SIG}):\n{lines}\n"


DPO = loss("return -F.logsigmoid(rho)", name="dpo")
DISCOPOP = loss("""
tau = 0.05
gate = torch.sigmoid(rho / tau)
logistic = -F.logsigmoid(rho)
exp_part = torch.exp(-rho.clamp(min=-50.0))
return logistic * (1.0 - gate) + exp_part * gate
""", name="discopop_clamped")
BATCH_NORMALISED = loss("""
z = (rho - rho.mean()) / (rho.std(unbiased=False) + 1.0)
return -F.logsigmoid(rho + 0.1 * z)
""", name="batch_normalised")


@pytest.mark.parametrize("code,name", [(DPO, "dpo"), (DISCOPOP, "discopop_clamped")])
def test_good_losses_pass_every_check(code: str, name: str) -> None:
    report = run_checks(code, beta=0.1)
    assert report.passed, report.summary()
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.passed and c.evidence for c in report.checks)
    assert report.function_name == name
    assert report.fingerprint is not None and len(report.fingerprint) == FINGERPRINT_LENGTH
    assert report.properties["batch_coupled"] is False
    assert report.properties["seconds_per_call"] > 0
    # DPO keeps a few (64,) float32 tensors for its backward pass: kilobytes, not a (64, 64) matrix.
    assert 256 <= report.properties["autograd_bytes_per_call"] < 64 * 64 * 4
    assert report.summary() == "passed all checks"


def test_report_round_trips_as_json() -> None:
    from lossforge.candidate.report import CheckReport

    report = run_checks(DPO)
    assert CheckReport.model_validate_json(report.model_dump_json()) == report


def test_batch_coupled_property() -> None:
    report = run_checks(BATCH_NORMALISED)
    assert report.passed, report.summary()
    assert report.properties["batch_coupled"] is True


def test_memory_per_call_sees_large_intermediates() -> None:
    outer = loss("""
pairwise = rho[:, None] - rho[None, :]
return -F.logsigmoid(rho) + 0.0 * torch.sigmoid(pairwise).mean(dim=1)
""")
    small = run_checks(DPO).properties["autograd_bytes_per_call"]
    large = run_checks(outer).properties["autograd_bytes_per_call"]
    assert large >= 64 * 64 * 4 > small


BROKEN = [
    # inf within the margins training reaches: exp(-2 * rho) overflows float32 at rho = -50 (e^100)
    ("exp overflows in range", loss("return torch.exp(-2.0 * rho)"), "extreme_margins", "= -50"),
    # 0 * inf in a gated loss whose exp is not clamped: the values hide it, the gradient does not
    ("gated exp, torch.where", loss("return torch.where(rho > 0, torch.exp(-2.0 * rho), -F.logsigmoid(rho))"),
     "extreme_margins", "gradient"),
    ("reduced with mean", loss("return -F.logsigmoid(rho).mean()"), "shape", "scalar"),
    ("extra dimension", loss("return -F.logsigmoid(rho).unsqueeze(1)"), "shape", "(1, 1)"),
    ("tuple like TRL", loss("return -F.logsigmoid(rho), rho, rho"), "shape", "tuple"),
    ("python float", loss("return 0.5"), "shape", "float"),
    ("integer output", loss("return (rho > 0).long()"), "shape", "int64"),
    ("zeros_like", loss("return torch.zeros_like(rho)"), "gradient", "no gradient"),
    ("detached", loss("return -F.logsigmoid(rho.detach())"), "gradient", "no gradient"),
    ("only chosen", loss("return -policy_chosen_logps"), "gradient", "policy_rejected_logps"),
    ("prefers rejected", loss("return F.softplus(rho)"), "prefers_chosen", "margin +1"),
    ("nan for random inputs", loss("return torch.log(policy_chosen_logps) + 0 * rho"), "finite", "nan"),
    ("raises", loss("return rho @ torch.ones(3, 3)"), "shape", "RuntimeError at line 7"),
    ("random", loss("return -F.logsigmoid(rho) + 0.01 * torch.rand_like(rho)"), "determinism", "differ"),
    ("mutates reference", loss("reference_chosen_logps.add_(1.0)\nreturn -F.logsigmoid(rho)"),
     "determinism", "reference_chosen_logps"),
    ("policy", "import os\n" + DPO, "policy", "[imports] line 1"),
]


@pytest.mark.parametrize("code,check,needle", [(c, k, n) for _, c, k, n in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_losses_fail_the_named_check(code: str, check: str, needle: str) -> None:
    report = run_checks(code)
    assert not report.passed
    assert report.failed_check == check, report.summary()
    failed = report.checks[-1]  # later checks are not run
    assert failed.name == check and not failed.passed
    assert needle in failed.evidence, failed.evidence
    assert failed.hint
    assert report.fingerprint is None
    assert all(c.passed for c in report.checks[:-1])


def test_prefers_chosen_evidence_gives_both_values() -> None:
    report = run_checks(loss("return F.softplus(rho)"))
    evidence = report.checks[-1].evidence
    for m in ("+1: ", "-1: ", "+3: ", "-3: ", "+5: ", "-5: "):
        assert m in evidence


def test_policy_failure_has_the_rule() -> None:
    report = run_checks(loss("w = torch.load('w.pt')\nreturn rho"))
    assert report.failed_check == "policy"
    assert report.properties["policy_rule"] == "forbidden_attribute"
    assert "torch.load" in report.summary()


def test_checks_are_deterministic() -> None:
    a, b = run_checks(DISCOPOP), run_checks(DISCOPOP)
    assert a.fingerprint == b.fingerprint
    assert [c.evidence for c in a.checks] == [c.evidence for c in b.checks]


def test_bfloat16_precision_is_reported_not_judged() -> None:
    report = run_checks(DPO)
    assert report.properties["dtypes"] == {"float64": "float64", "bfloat16": "bfloat16"}
    assert report.properties["bfloat16_max_abs_error"] >= 0.0


# --------------------------------------------------------------------------------------------------
# The range training reaches, and messages that name the mistake
# --------------------------------------------------------------------------------------------------

CELL_AS_PUBLISHED = loss("return 0.5 * torch.exp(-rho) + 0.5 * -F.logsigmoid(rho)", name="cell")


def test_a_published_exp_loss_passes_with_a_warning_beyond_the_training_range() -> None:
    """CELL in the paper's formula (exp unclamped) overflows only at beta*margin = -100 and -1000."""
    from lossforge.candidate.checks import TRAINING_MARGIN_LIMIT

    report = run_checks(CELL_AS_PUBLISHED)
    assert report.passed, report.summary()
    assert TRAINING_MARGIN_LIMIT == 50.0
    beyond = report.properties["beyond_training_range"]
    assert len(beyond) == 2 and "= -100: the loss is 4 inf of 4" in beyond[0] and "= -1000" in beyond[1]
    extreme = next(c for c in report.checks if c.name == "extreme_margins")
    assert "margins +50, -50, +0" in extreme.evidence and "|beta*margin| <= 50" in extreme.evidence
    assert "Training stays finite" in extreme.evidence and "degenerate" in extreme.evidence
    assert "warnings" not in report.properties  # the harness's own warnings are not the loss's


def test_large_beta_keeps_random_inputs_within_the_training_range() -> None:
    report = run_checks(CELL_AS_PUBLISHED, beta=2.0)
    assert report.passed, report.summary()
    finite = next(c for c in report.checks if c.name == "finite")
    assert finite.evidence.startswith("64 random pairs")
    # at beta 2 the random log-probs lie in [-13.5, -1], so |beta * margin| <= 50
    broken = run_checks(loss("return torch.exp(-2.0 * rho)"), beta=2.0)
    assert broken.failed_check == "extreme_margins" and "within the range training reaches" in broken.checks[-1].evidence


def test_a_misspelt_function_names_the_missing_attribute() -> None:
    report = run_checks(loss("return -F.logsigmod(rho)"))
    assert report.failed_check == "shape"
    evidence = report.checks[-1].evidence
    assert "AttributeError at line 7: torch.nn.functional has no attribute 'logsigmod' (did you mean 'logsigmoid'" \
        in evidence, evidence
    assert "NoneType" not in evidence
    method = run_checks(loss("return F.softplus(-rho).expp()"))
    assert "a Tensor object has no attribute 'expp' (did you mean 'exp'" in method.checks[-1].evidence


def test_harness_warnings_are_not_the_losss_but_the_losss_own_are_reported() -> None:
    # fails at -50 inside the range: the harness reads values of tensors that require grad to describe
    # the failure (torch: "Converting a tensor with requires_grad=True to a scalar ..."): not reported
    failing = run_checks(loss("return torch.exp(-2.0 * rho)"))
    assert failing.failed_check == "extreme_margins"
    assert "warnings" not in failing.properties
    # a warning the loss raises itself is reported, with its line
    own = run_checks(loss("w = torch.ones(2, 2).T.sum()\nreturn -F.logsigmoid(rho) + 0.0 * w + 0.0 * rho.T.sum()"))
    assert own.passed, own.summary()
    assert any(w.startswith("UserWarning (line 8):") and ".T" in w for w in own.properties["warnings"]), own.properties
