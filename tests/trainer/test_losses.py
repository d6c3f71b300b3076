"""Tests of the loss library (lossforge.trainer.losses).

Approach for TRL equivalence: every loss with a TRL 1.x loss_type (``TRL_LOSS_TYPES``) is compared against
TRL's REAL code path: ``trl.DPOTrainer._compute_loss`` is called unbound with a stub ``self`` whose training
attributes are copied from a real ``trl.DPOConfig`` exactly as ``DPOTrainer.__init__`` copies them, and a
fake model whose forward returns per-token log-probs that sum to the wanted policy log-probs (the reference
log-probs are passed precomputed in the inputs). ``_compute_loss`` returns the batch mean, so each pair is
checked alone (batch of 1); AOT sorts across the batch, so for it the batch mean is compared.

IPO is also checked on TRL's real path: TRL 1.x divides the log-ratios by the completion length, so it is
called with one-token completions, where that normalisation is the identity, and a second test checks
that with longer completions TRL equals our IPO applied to the length-normalised log-ratios.

KTO-pair is not in TRL 1.x: it is checked against the TRL 0.x formula (``loss_type="kto_pair"`` of
``DPOTrainer.dpo_loss`` in TRL 0.8, reproduced in ``_trl0_kto_pair`` below). The DiscoPOP paper's seven
discovered losses (PADLL, AQFL, CELL, DBAQL, AQL, PFL and DiscoPOP/LRML itself; only the last is in TRL)
are checked three ways: against the paper's formulas restated in our notation (``_paper_*``), against the
same formulas in the form of DiscoPOP's trainer methods (our fixture
tests/candidate/fixtures/discopop_form/trainer_methods.py, which ``lossforge import`` is tested on), and
against values recorded from the published code (SakanaAI/DiscoPOP, src/alignment/gpo.py) on fixed
inputs, losses and gradients (tests/trainer/data/discopop_published_values.json; no upstream code is kept).
"""

from __future__ import annotations

import ast
import json
import math
import types
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossforge.trainer.losses import (
    CANDIDATE_PREAMBLE,
    LIBRARY,
    TRL_CONFIG,
    TRL_LOSS_TYPES,
    library_code,
)

NAMES = sorted(LIBRARY)
# DPOConfig (transformers.TrainingArguments) warns about its own deprecated defaults; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:transformers")
BETAS = [0.05, 0.1, 0.5]


def _inputs(batch: int, seed: int = 0, dtype=torch.float32, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    xs = [(-50.0 + 45.0 * torch.rand(batch, generator=g, dtype=torch.float64)).to(dtype) for _ in range(4)]
    if requires_grad:
        xs = [x.requires_grad_(True) for x in xs]
    return xs


def _exec_candidate(name: str):
    ns: dict = {}
    exec(compile(library_code(name), f"<library:{name}>", "exec"), ns)
    fns = [v for k, v in ns.items() if isinstance(v, types.FunctionType)]
    assert len(fns) == 1, f"{name}: expected one function, got {[f.__name__ for f in fns]}"
    return fns[0]


# --------------------------------------------------------------------------------------------------
# 1. Every library loss is a valid standalone candidate
# --------------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(LIBRARY) == {
        "dpo", "ipo", "slic", "kto_pair", "robust_dpo", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
        "apo_zero", "aot_pair", "discopop", "padll", "aqfl", "cell", "dbaql", "aql", "pfl",
    }
    assert set(TRL_LOSS_TYPES) <= set(LIBRARY)
    assert set(TRL_CONFIG) == set(TRL_LOSS_TYPES)


@pytest.mark.parametrize("name", NAMES)
def test_library_code_is_one_function_candidate(name):
    code = library_code(name)
    assert code.startswith(CANDIDATE_PREAMBLE)
    tree = ast.parse(code)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    others = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.Import, ast.ImportFrom))]
    assert len(defs) == 1 and not others
    imported = {a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imported <= {"math", "torch", "torch.nn.functional"}
    args = [a.arg for a in defs[0].args.args]
    assert args == [
        "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
        "beta",
    ]
    assert ast.get_docstring(defs[0]) and "arXiv" in ast.get_docstring(defs[0])
    fn = _exec_candidate(name)
    xs = _inputs(5, seed=3)
    torch.testing.assert_close(fn(*xs, 0.1), LIBRARY[name](*xs, 0.1))


def test_library_code_unknown_name():
    with pytest.raises(KeyError) as exc:
        library_code("no_such_loss")
    assert "dpo" in str(exc.value) and "discopop" in str(exc.value)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_gradients(name, batch):
    """Shape (batch,), finite values and gradients; the gradient reaches policy_chosen_logps.

    The gradient must be connected on every input and nonzero on at least one (a hinge loss such as SLiC
    is flat, with zero gradient, wherever the margin already exceeds 1 / beta).
    """
    fn = _exec_candidate(name)
    nonzero = False
    for seed in range(3):
        for beta in BETAS:
            xs = _inputs(batch, seed=seed, requires_grad=True)
            losses = fn(*xs, beta)
            assert losses.shape == (batch,)
            assert torch.isfinite(losses).all(), (name, losses)
            losses.sum().backward()
            for x in xs:
                assert x.grad is None or torch.isfinite(x.grad).all(), (name, x.grad)
            assert xs[0].grad is not None, name
            nonzero = nonzero or bool(xs[0].grad.abs().sum() > 0)
    assert nonzero, name


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradients_at_zero_margin(name):
    """All-equal inputs (zero margins, zero batch spread): the batch statistics must not turn into NaN."""
    xs = [torch.full((4,), -20.0, requires_grad=True) for _ in range(4)]
    losses = LIBRARY[name](*xs, 0.1)
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in xs if x.grad is not None)


# --------------------------------------------------------------------------------------------------
# 2. Equivalence with TRL's real code path (DPOTrainer._compute_loss)
# --------------------------------------------------------------------------------------------------

try:
    from trl import DPOConfig, DPOTrainer
except ImportError:  # TRL is a dev/gpu extra; the other tests still run without it
    DPOConfig = DPOTrainer = None

requires_trl = pytest.mark.skipif(DPOTrainer is None, reason="trl is not installed")


class _FakeModel:
    """Stands in for the policy: forward returns the given per-token log-probs (rows = [chosen; rejected])."""

    def __init__(self, per_token_logps: torch.Tensor):
        self.per_token_logps = per_token_logps

    def __call__(self, **kwargs):
        lp = self.per_token_logps
        return types.SimpleNamespace(
            log_probs=lp,
            entropy=torch.zeros_like(lp),
            mean_logits=torch.zeros_like(lp),
            is_top1=torch.zeros_like(lp, dtype=torch.bool),
            log_sum_sq_probs=torch.zeros_like(lp),
        )


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x


@pytest.fixture(scope="module")
def trl_config_factory(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trl"))
    cache: dict = {}

    def make(loss_type: str, beta: float, **extra):
        key = (loss_type, beta, tuple(sorted(extra.items())))
        if key not in cache:
            cache[key] = DPOConfig(
                output_dir=out, loss_type=[loss_type], beta=beta, report_to=[], precompute_ref_log_probs=True,
                use_cpu=True, **extra,
            )
        return cache[key]

    return make


def _stub_trainer(args):
    """The attributes _compute_loss reads, set as DPOTrainer.__init__ sets them from the config."""
    return types.SimpleNamespace(
        args=args,
        beta=args.beta,
        precompute_ref_logps=args.precompute_ref_log_probs,
        loss_types=args.loss_type,
        loss_weights=args.loss_weights or [1.0] * len(args.loss_type),
        ld_alpha=args.ld_alpha,
        f_divergence_type=args.f_divergence_type,
        f_alpha_divergence_coef=args.f_alpha_divergence_coef,
        label_smoothing=args.label_smoothing,
        use_weighting=args.use_weighting,
        aux_loss_enabled=False,
        accelerator=_Accelerator(),
        model=types.SimpleNamespace(training=True),
        ref_model=None,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


def _trl_loss(args, pc, pr, rc, rr, chosen_len: int = 1, rejected_len: int = 1) -> torch.Tensor:
    """TRL's batch-mean loss for policy logps (pc, pr) and reference logps (rc, rr), each shape (batch,).

    Each completion is `len` tokens after a one-token prompt; the policy's per-token log-probs are the
    sequence log-prob spread evenly over the completion tokens (zero elsewhere), so their sum is exact.
    """
    batch = pc.shape[0]
    n = max(chosen_len, rejected_len)
    seq = n + 1
    completion_mask = torch.zeros(2 * batch, seq, dtype=torch.long)
    completion_mask[:batch, 1 : 1 + chosen_len] = 1
    completion_mask[batch:, 1 : 1 + rejected_len] = 1
    shift_mask = completion_mask[:, 1:].to(pc.dtype)
    lens = shift_mask.sum(dim=1, keepdim=True)
    logps = torch.cat([pc, pr])
    per_token = shift_mask * (logps.unsqueeze(1) / lens)
    inputs = {
        "input_ids": torch.ones(2 * batch, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * batch, seq, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    return DPOTrainer._compute_loss(_stub_trainer(args), _FakeModel(per_token), inputs, return_outputs=False)


PER_PAIR_TRL = sorted(n for n in TRL_LOSS_TYPES if n != "aot_pair")


@requires_trl
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name", PER_PAIR_TRL)
def test_matches_trl_per_pair(name, beta, trl_config_factory):
    args = trl_config_factory(TRL_LOSS_TYPES[name], beta, **TRL_CONFIG[name])
    pc, pr, rc, rr = _inputs(6, seed=11, dtype=torch.float64)
    ours = LIBRARY[name](pc, pr, rc, rr, beta)
    theirs = torch.stack(
        [_trl_loss(args, pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1]) for i in range(6)]
    )
    # TRL's exo_pair takes log(eps) of a float32 tensor even for float64 inputs: allow float32 rounding there.
    tol = {"rtol": 1e-6, "atol": 1e-6} if name == "exo_pair" else {}
    torch.testing.assert_close(ours, theirs, **tol)


@requires_trl
@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("beta", BETAS)
def test_aot_matches_trl_batch_mean(beta, batch, trl_config_factory):
    args = trl_config_factory("aot", beta, **TRL_CONFIG["aot_pair"])
    pc, pr, rc, rr = _inputs(batch, seed=5, dtype=torch.float64)
    ours = LIBRARY["aot_pair"](pc, pr, rc, rr, beta).mean()
    torch.testing.assert_close(ours, _trl_loss(args, pc, pr, rc, rr))


@requires_trl
@pytest.mark.parametrize("beta", BETAS)
def test_ipo_matches_trl_for_one_token_completions(beta, trl_config_factory):
    args = trl_config_factory("ipo", beta)
    pc, pr, rc, rr = _inputs(6, seed=2, dtype=torch.float64)
    ours = LIBRARY["ipo"](pc, pr, rc, rr, beta)
    theirs = torch.stack(
        [_trl_loss(args, pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1]) for i in range(6)]
    )
    torch.testing.assert_close(ours, theirs)


@requires_trl
def test_trl_ipo_is_length_normalised(trl_config_factory):
    """The documented difference: TRL's ipo divides each log-ratio by its completion length."""
    beta, lc, lr = 0.1, 5, 3
    args = trl_config_factory("ipo", beta)
    pc, pr, rc, rr = _inputs(4, seed=9, dtype=torch.float64)
    for i in range(4):
        theirs = _trl_loss(args, pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], lc, lr)
        ours_normalised = LIBRARY["ipo"](pc[i : i + 1] / lc, pr[i : i + 1] / lr, rc[i : i + 1] / lc,
                                         rr[i : i + 1] / lr, beta)
        ours_raw = LIBRARY["ipo"](pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], beta)
        torch.testing.assert_close(ours_normalised[0], theirs)
        assert not torch.isclose(ours_raw[0], theirs)


@requires_trl
def test_trl_harness_sees_the_gradient(trl_config_factory):
    """Guard on the harness itself: TRL's loss computed through it depends on the policy log-probs."""
    args = trl_config_factory("sigmoid", 0.1)
    pc, pr, rc, rr = _inputs(1, seed=1, dtype=torch.float64)
    a = _trl_loss(args, pc, pr, rc, rr)
    b = _trl_loss(args, pc + 1.0, pr, rc, rr)
    assert b < a


# --------------------------------------------------------------------------------------------------
# 2b. Losses not in TRL 1.x: reproduced reference formulas
# --------------------------------------------------------------------------------------------------


def _trl0_kto_pair(pc, pr, rc, rr, beta):
    """TRL 0.8 DPOTrainer.dpo_loss, loss_type="kto_pair" (returns 2 * batch losses)."""
    chosen_KL = (pc - rc).mean().clamp(min=0)
    rejected_KL = (pr - rr).mean().clamp(min=0)
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    return torch.cat(
        (
            1 - F.sigmoid(beta * (chosen_logratios - rejected_KL)),
            1 - F.sigmoid(beta * (chosen_KL - rejected_logratios)),
        ),
        0,
    )


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("beta", BETAS)
def test_kto_pair_matches_trl0_formula(beta, batch):
    pc, pr, rc, rr = _inputs(batch, seed=4, dtype=torch.float64)
    pc = pc + 3.0  # make chosen_KL positive sometimes so the clamp is exercised both ways
    ours = LIBRARY["kto_pair"](pc, pr, rc, rr, beta)
    theirs = _trl0_kto_pair(pc, pr, rc, rr, beta)
    torch.testing.assert_close(ours, 0.5 * (theirs[:batch] + theirs[batch:]))
    torch.testing.assert_close(ours.mean(), theirs.mean())


# The paper's discovered losses (Lu et al. 2024, arXiv:2406.08414, appendix), in the paper's notation:
# rho is the margin (pi_c - pi_r) - (ref_c - ref_r), z = beta * rho, and the batch statistics read
# s = z / 0.05 (0.05: the paper's beta, fixed in its code).


def _margin(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def _paper_padll(pc, pr, rc, rr, beta):
    rho = _margin(pc, pr, rc, rr)
    return 0.9 * torch.where(rho < 0, 0.5, 1.0).to(rho.dtype) * F.softplus(-beta * rho)  # weight 0.45 on mismatches


def _paper_cell(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    return (torch.exp(-z) + F.softplus(-z)) / 2


def _paper_aqfl(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    s = z / 0.05
    q0 = torch.std(s) * torch.mean(torch.sigmoid(-s))
    q = 0.95 * q0 + 0.05 * torch.sigmoid(torch.mean(s))
    w = torch.sigmoid(0.1 * torch.abs(s - q))
    return w * F.softplus(-z) + (1 - w) * torch.clamp(1 - z, min=0)


def _paper_dbaql(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    c = torch.sigmoid(torch.var(z / 0.05))
    return c * F.softplus(-z / 0.9) + (1 - c) * torch.exp(-0.9 * z)


def _paper_lrml(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    w = torch.sigmoid(z / 0.05)
    return (1 - w) * F.softplus(-z) + w * torch.exp(-z)


def _paper_aql(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    s = z / 0.05
    q = 0.5 + 0.01 * (torch.sigmoid(torch.mean(s)) - 0.5)
    w = torch.sigmoid(q - s)
    return w * F.softplus(-z) + (1 - w) * torch.clamp(1 - z, min=0)


def _paper_pfl(pc, pr, rc, rr, beta):
    z = beta * _margin(pc, pr, rc, rr)
    return torch.where(pc > pr, 0.5 * F.softplus(-z), 2.0 * torch.clamp(1 - z, min=0))


PAPER = {
    "padll": _paper_padll,
    "cell": _paper_cell,
    "aqfl": _paper_aqfl,
    "dbaql": _paper_dbaql,
    "discopop": _paper_lrml,
    "aql": _paper_aql,
    "pfl": _paper_pfl,
}


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name", sorted(PAPER))
def test_discopop_family_matches_the_paper_formulas(name, beta):
    """Batches of 2+ (the published std/var are NaN for a single pair; ours define the spread as 0 there)."""
    for batch in (2, 7):
        xs = _inputs(batch, seed=8, dtype=torch.float64)
        torch.testing.assert_close(LIBRARY[name](*xs, beta), PAPER[name](*xs, beta))


# --------------------------------------------------------------------------------------------------
# 3. Semantics: prefers the chosen answer
# --------------------------------------------------------------------------------------------------


def _mirrored_pair(margin: float, batch: int = 1):
    """Policy log-ratios +-margin/2 around a neutral reference, and the mirrored (swapped) pair."""
    ref = torch.full((batch,), -30.0, dtype=torch.float64)
    up, down = ref + margin / 2, ref - margin / 2
    good = (up, down, ref.clone(), ref.clone())
    bad = (down, up, ref.clone(), ref.clone())
    return good, bad


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name", NAMES)
def test_lower_at_positive_margin(name, beta):
    """Every loss is lower at a large positive margin (beta * margin >= 1) than at the mirrored negative one.

    No exception at large margins. The one loss that breaks this at SMALL margins is PADLL (its weight
    jumps from 0.9 to 0.45 at margin 0), see test_padll_small_margin_inversion.
    """
    for bm in (1.0, 3.0, 10.0, 40.0):
        margin = bm / beta
        for batch in (1, 4):
            good, bad = _mirrored_pair(margin, batch)
            lg, lb = LIBRARY[name](*good, beta), LIBRARY[name](*bad, beta)
            assert lg.mean() < lb.mean(), (name, beta, bm, lg, lb)
    # a batch of mixed margins against its mirror image
    margins = torch.tensor([1.0, 2.0, 5.0, 20.0], dtype=torch.float64) / beta
    ref = torch.full((4,), -30.0, dtype=torch.float64)
    lg = LIBRARY[name](ref + margins / 2, ref - margins / 2, ref, ref, beta)
    lb = LIBRARY[name](ref - margins / 2, ref + margins / 2, ref, ref, beta)
    assert lg.mean() < lb.mean(), name


def test_padll_small_margin_inversion():
    """Documented exception: for 0 < beta*margin < ln(golden ratio) ~ 0.481, PADLL prefers the rejected."""
    beta = 0.1
    crossover = math.log((1 + math.sqrt(5)) / 2)
    good, bad = _mirrored_pair(0.3 / beta)
    assert LIBRARY["padll"](*good, beta) > LIBRARY["padll"](*bad, beta)
    good, bad = _mirrored_pair((crossover + 0.05) / beta)
    assert LIBRARY["padll"](*good, beta) < LIBRARY["padll"](*bad, beta)


# --------------------------------------------------------------------------------------------------
# 4. The paper's seven discovered losses against the published code's values and in its trainer form
# --------------------------------------------------------------------------------------------------

#: Losses and gradients recorded from the published DiscoPOP trainer (SakanaAI/DiscoPOP,
#: src/alignment/gpo.py) on fixed inputs; numbers only (see its "about").
PUBLISHED = json.loads((Path(__file__).parent / "data" / "discopop_published_values.json").read_text())

#: Our DiscoPOP-form trainer (written for the tests from the paper's formulas, in the form of gpo.py).
FORM_FIXTURE = Path(__file__).resolve().parents[1] / "candidate" / "fixtures" / "discopop_form" / "trainer_methods.py"

#: Our name -> the trainer method that gpo_loss dispatches to for the paper's loss_type (gpo.py's names).
DISCOVERED = {
    "discopop": "log_ratio_modulated_loss",  # loss_type "lrml"
    "padll": "performance_adaptive_decay_logistic_loss",
    "aqfl": "adaptive_quantile_feedback_loss",
    "cell": "combined_exp_logistic_loss",
    "dbaql": "dynamic_blended_adaptive_quantile_loss",
    "aql": "adaptive_quantile_loss",
    "pfl": "policy_focused_loss",
}


def _form_method(name: str):
    """A method of the DiscoPOP-form fixture, compiled alone with the module's torch and F (the module
    imports trl, so the class is not imported) and called with a stub trainer as ``self``."""
    tree = ast.parse(FORM_FIXTURE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"torch": torch, "F": F, "Tuple": tuple}
    exec(compile(ast.Module(body=[method], type_ignores=[]), str(FORM_FIXTURE), "exec"), namespace)
    return namespace[name]


def test_seven_discovered_losses_in_the_library():
    assert PUBLISHED["methods"] == DISCOVERED  # the record names the published methods these were read from
    assert {(c["loss"], c["beta"]) for c in PUBLISHED["cases"]} == {(n, b) for n in DISCOVERED for b in BETAS}
    tree = ast.parse(FORM_FIXTURE.read_text())
    dispatcher = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "gpo_loss")
    dispatched = {n.attr for n in ast.walk(dispatcher) if isinstance(n, ast.Attribute) and n.attr.endswith("_loss")}
    discovered = dispatched - {"sigmoid_loss", "hinge_loss", "ipo_loss", "kto_pair_loss", "bco_pair_loss"}
    assert discovered == set(DISCOVERED.values())  # 7 of 7
    assert set(DISCOVERED) <= set(LIBRARY)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name", sorted(DISCOVERED))
def test_discovered_losses_match_the_published_code(name, beta):
    """Values and gradients equal those recorded from the published method, for batches of 2, 7 and 16 and
    for margins up to +-50 logits (the range training reaches), where the exp terms are large but finite.
    The DiscoPOP-form fixture's method gives the same (it is what the importer tests import)."""
    form = _form_method(DISCOVERED[name])
    trainer = types.SimpleNamespace(beta=beta)
    cases = [c for c in PUBLISHED["cases"] if c["loss"] == name and c["beta"] == beta]
    assert [c["inputs"] for c in cases] == ["batch2_seed8", "batch7_seed9", "batch16_seed10", f"margins_beta{beta}"]
    for case in cases:
        want = torch.tensor(case["losses"], dtype=torch.float64)
        want_grad = torch.tensor(case["grad_policy_chosen"], dtype=torch.float64)
        for fn in (lambda *xs: LIBRARY[name](*xs, beta), lambda *xs: form(trainer, *xs)):
            xs = [torch.tensor(x, dtype=torch.float64) for x in PUBLISHED["inputs"][case["inputs"]]]
            xs[0].requires_grad_(True)
            losses = fn(*xs)
            torch.testing.assert_close(losses, want)
            losses.sum().backward()
            torch.testing.assert_close(xs[0].grad, want_grad)
    # the random batches are this module's own inputs (the same generator and seeds)
    for key, (batch, seed) in {"batch2_seed8": (2, 8), "batch7_seed9": (7, 9), "batch16_seed10": (16, 10)}.items():
        assert [x.tolist() for x in _inputs(batch, seed=seed, dtype=torch.float64)] == PUBLISHED["inputs"][key]


@pytest.mark.parametrize("name", ["discopop", "cell", "dbaql"])
def test_exp_losses_are_held_as_published_overflow_included(name):
    """No clamp: beyond the margins training reaches, the library overflows exactly where the paper's code
    (and TRL's loss_type="discopop") does, in float32."""
    (recorded,) = [c for c in PUBLISHED["overflow"] if c["loss"] == name]
    assert recorded["beta"] == 0.1 and recorded["margins"] == [-600.0, -10000.0] and recorded["dtype"] == "float32"
    ref = torch.full((2,), -30.0)
    margins = torch.tensor([-60.0, -1000.0]) / 0.1
    xs = (ref + margins / 2, ref - margins / 2, ref, ref)
    ours = LIBRARY[name](*xs, 0.1)
    assert torch.isfinite(ours[0])
    torch.testing.assert_close(ours[:1], torch.tensor(recorded["losses"][:1]))
    assert not torch.isfinite(ours[1]) and not math.isfinite(recorded["losses"][1])  # a clamp at 50 kept this finite
    torch.testing.assert_close(_form_method(DISCOVERED[name])(types.SimpleNamespace(beta=0.1), *xs)[:1], ours[:1])
    if name == "cell":
        assert float(ours[0]) > 1e25  # 0.5 * e^60, not a clamped 0.5 * e^50


@pytest.mark.parametrize("name", NAMES)
def test_every_library_loss_passes_the_gate(name):
    """The check gate accepts every library loss as written (the published formulas, unclamped)."""
    from lossforge.candidate.checks import run_checks

    for beta in (0.05, 0.1):
        report = run_checks(library_code(name), beta=beta)
        assert report.passed, (name, beta, report.summary())


def test_pfl_weights_by_the_policy_ranking_not_the_margin():
    """PFL's branch is policy_chosen_logps > policy_rejected_logps (the policy alone, as published)."""
    beta = 0.1
    pc, pr = torch.tensor([-10.0]), torch.tensor([-12.0])  # the policy ranks chosen first
    rc, rr = torch.tensor([-5.0]), torch.tensor([-20.0])  # the reference even more so: margin -13
    z = beta * ((pc - pr) - (rc - rr))
    torch.testing.assert_close(LIBRARY["pfl"](pc, pr, rc, rr, beta), -F.logsigmoid(z) / 2)
    torch.testing.assert_close(LIBRARY["pfl"](pr, pc, rr, rc, beta), 2 * torch.relu(1 - (-z)))
