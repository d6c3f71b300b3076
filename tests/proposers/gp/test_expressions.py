"""Tests of the loss expression language (lossforge.proposers.gp.expressions).

Rendered code is always exec'd in a fresh namespace and compared with ``evaluate`` bit for bit; seeds are
compared with the loss library (``lossforge.trainer.losses``) on random log-probs.
"""

from __future__ import annotations

import ast
import json
import math
import random
import types

import pytest
import torch
import torch.nn.functional as F

from lossforge.proposers.gp import expressions as E
from lossforge.trainer.losses import LIBRARY


from tests.support import exec_candidate as _exec, one_torch_thread  # noqa: F401  (autouse fixture)


def _logps(batch: int, seed: int, dtype=torch.float64, scale: float = 45.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(-50.0 + scale * torch.rand(batch, generator=g, dtype=torch.float64)).to(dtype) for _ in range(4)]


def _random_trees(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tree = E.random_tree(rng, rng.randint(1, 6), rng.choice([-1, 0, 1]))
        out.append(E.simplify(tree) if rng.random() < 0.5 else tree)
    return out


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_render_matches_evaluate_bit_for_bit(dtype):
    trees = [t for _, t in E.seed_trees()] + _random_trees(150)
    # unsimplified constant subtrees, constant gates, max/min against constants
    trees.append(
        ["add", ["mix", ["const", 1.0], ["softplus", ["const", 2]], ["const", 0.3], 0.5],
         ["max", ["const", 1], ["min", "rho", ["sigmoid", ["const", 0.0]]]]]
    )
    trees.append(["const", 0.25])
    for i, tree in enumerate(trees):
        fn = _exec(E.render(tree, f"loss_{i}"))
        xs = _logps(32, seed=i, dtype=dtype, scale=200.0)
        got = fn(*xs, 0.1)
        want = E.evaluate(tree, *E.terminals(*xs, 0.1))
        assert got.shape == want.shape == (32,)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=E.to_infix(tree))


def test_rendered_source_is_one_function_with_the_candidate_signature():
    for name, tree in E.seed_trees() + [("r", t) for t in _random_trees(50, seed=1)]:
        code = E.render(tree, name)
        assert code == E.render(tree, name)  # deterministic
        module = ast.parse(code)
        imports = [n for n in module.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        funcs = [n for n in module.body if isinstance(n, ast.FunctionDef)]
        assert len(imports) + len(funcs) == len(module.body) and len(funcs) == 1
        assert {a.name for n in imports for a in n.names} <= {"math", "torch", "torch.nn.functional"}
        assert [a.arg for a in funcs[0].args.args] == [
            "policy_chosen_logps", "policy_rejected_logps",
            "reference_chosen_logps", "reference_rejected_logps", "beta",
        ]
        assert funcs[0].name == name
        assert isinstance(funcs[0].body[-1], ast.Return)
        for var in ("rho", "c", "r"):  # each terminal is computed at most once
            assert code.count(f"\n    {var} = ") <= 1


def test_render_names_are_sanitised_identifiers():
    code = E.render(E.SEEDS["dpo"], "17 my-loss")
    assert "def loss_17_my_loss(" in code
    assert "def class_loss(" in E.render(E.SEEDS["dpo"], "class")


def test_long_expressions_are_split_into_named_lines():
    code = E.render(E.SEEDS["discopop"], "discopop")
    assert "    gate = torch.sigmoid(rho / 0.05)\n" in code
    assert "losses = softplus_term * (1.0 - gate) + exp_term * gate" in code


# --------------------------------------------------------------------------------------------------
# Seeds reproduce the library
# --------------------------------------------------------------------------------------------------

# seed name -> (library name, factor) with seed == factor(beta) * library
_SEED_VS_LIBRARY = {
    "dpo": ("dpo", lambda b: 1.0),
    "slic": ("slic", lambda b: 1.0),
    "ipo_like": ("ipo", lambda b: b * b),
    "discopop": ("discopop", lambda b: 1.0),
    "nca_pair": ("nca_pair", lambda b: 1.0),
    "bco_pair": ("bco_pair", lambda b: 1.0),
    "apo_zero": ("apo_zero", lambda b: 1.0),
    "sppo_hard_like": ("sppo_hard", lambda b: b * b),
    "robust_dpo": ("robust_dpo", lambda b: 1.0),
    "cell": ("cell", lambda b: 1.0),
    "exo_pair": ("exo_pair", lambda b: 1.0),
}


def test_every_seed_is_compared_with_the_library():
    assert set(_SEED_VS_LIBRARY) == set(E.SEEDS)


@pytest.mark.parametrize("seed_name", list(E.SEEDS))
@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_seed_reproduces_library_formula(seed_name, beta):
    lib_name, factor = _SEED_VS_LIBRARY[seed_name]
    xs = _logps(64, seed=7)
    tree = E.SEEDS[seed_name]
    want = factor(beta) * LIBRARY[lib_name](*xs, beta)
    got_eval = E.evaluate(tree, *E.terminals(*xs, beta))
    got_code = _exec(E.render(tree, seed_name))(*xs, beta)
    # exp is clamped at exp(20) in the language; the library's is not (it overflows beyond ~80)
    keep = E.terminals(*xs, beta)[0] > -E.EXP_CLAMP
    assert keep.sum() > 32
    torch.testing.assert_close(got_eval[keep], want[keep], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_code[keep], want[keep], rtol=1e-9, atol=1e-9)
    if "exp" not in E.op_names(tree):
        torch.testing.assert_close(got_eval, want, rtol=1e-9, atol=1e-9)


def test_dpo_seed_is_minus_logsigmoid_of_beta_margin():
    pc, pr, rc, rr = _logps(16, seed=3)
    beta = 0.1
    want = -F.logsigmoid(beta * ((pc - pr) - (rc - rr)))
    torch.testing.assert_close(E.evaluate(E.SEEDS["dpo"], *E.terminals(pc, pr, rc, rr, beta)), want)


def test_seeds_pass_the_cheap_check_and_are_distinct():
    keys = set()
    for name, tree in E.seed_trees():
        assert E.check_tree(tree) is None, name
        assert E.simplify(tree) == E.normalize(tree)  # seeds are stored in simplified form
        keys.add(E.canonical_key(tree))
    assert len(keys) == len(E.SEEDS)


def test_discopop_seed_is_finite_where_the_unclamped_library_overflows():
    rho = torch.tensor([-1000.0, -100.0, 0.0, 100.0, 1000.0], requires_grad=True)
    out = E.evaluate(E.SEEDS["discopop"], rho, rho, torch.zeros_like(rho))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(rho.grad).all()


# --------------------------------------------------------------------------------------------------
# Structure, JSON, simplification, keys
# --------------------------------------------------------------------------------------------------


def test_trees_are_json_round_trippable():
    for tree in [t for _, t in E.seed_trees()] + _random_trees(100, seed=2):
        back = json.loads(json.dumps(tree))
        assert E.is_tree(back)
        assert E.normalize(back) == E.normalize(tree)
    assert E.normalize(["scale", 2, ["const", 1]]) == ["scale", 2.0, ["const", 1.0]]


@pytest.mark.parametrize(
    "bad",
    [
        "x", ["foo", "rho"], ["softplus"], ["add", "rho"], ["const", "a"], ["const", True],
        ["mix", "rho", "c", "r", 0.0], ["mix", "rho", "c", "r"], ["scale", "rho", 2.0], 3.0, None, [],
    ],
)
def test_malformed_trees_are_rejected(bad):
    assert not E.is_tree(bad)
    with pytest.raises(E.TreeError):
        E.validate(bad)


def test_size_and_depth():
    assert (E.size("rho"), E.depth("rho")) == (1, 0)
    assert (E.size(E.SEEDS["dpo"]), E.depth(E.SEEDS["dpo"])) == (3, 2)
    assert (E.size(E.SEEDS["discopop"]), E.depth(E.SEEDS["discopop"])) == (8, 3)


@pytest.mark.parametrize(
    "tree, expected",
    [
        (["neg", ["neg", "rho"]], "rho"),
        (["mul", "c", ["const", 1.0]], "c"),
        (["mul", ["const", 2.0], "c"], ["scale", 2.0, "c"]),
        (["add", "r", ["const", 0.0]], "r"),
        (["sub", "rho", "rho"], ["const", 0.0]),
        (["add", ["const", 1.0], ["const", 2.0]], ["const", 3.0]),
        (["softplus", ["sub", ["const", 1.0], ["const", 1.0]]], ["const", math.log(2.0)]),
        (["scale", 2.0, ["scale", 3.0, "rho"]], ["scale", 6.0, "rho"]),
        (["scale", -1.0, "rho"], ["neg", "rho"]),
        (["square", ["neg", "c"]], ["square", "c"]),
        (["add", "rho", ["neg", "c"]], ["sub", "rho", "c"]),
        (["mix", "rho", "rho", "c", 0.1], "rho"),
        (["max", "c", "c"], "c"),
    ],
)
def test_simplify_trivial_cases(tree, expected):
    assert E.simplify(tree) == expected


def test_simplify_preserves_values():
    for i, tree in enumerate(_random_trees(100, seed=4)):
        xs = _logps(16, seed=i)
        t = E.terminals(*xs, 0.1)
        a, b = E.evaluate(tree, *t), E.evaluate(E.simplify(tree), *t)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, msg=E.to_infix(tree))


def test_canonical_key_dedups_structure():
    a = ["add", ["softplus", ["neg", "c"]], ["softplus", "r"]]
    b = ["add", ["softplus", "r"], ["softplus", ["neg", ["neg", ["neg", "c"]]]]]
    assert E.canonical_key(a) == E.canonical_key(b)
    x, y, z = ["sigmoid", "c"], ["tanh", "r"], ["relu", "rho"]
    assert E.canonical_key(["add", x, ["add", y, z]]) == E.canonical_key(["add", ["add", z, x], y])
    assert E.canonical_key(["sub", x, y]) != E.canonical_key(["sub", y, x])
    assert E.canonical_key(["mix", x, y, "rho", 0.05]) != E.canonical_key(["mix", x, y, "rho", 0.1])
    assert E.canonical_key(["mul", ["const", 1.0], E.SEEDS["dpo"]]) == E.canonical_key(E.SEEDS["dpo"])


def test_margin_sign_and_polarity():
    assert E.margin_sign(E.SEEDS["dpo"]) == -1
    assert E.margin_sign(E.SEEDS["bco_pair"]) == -1
    assert E.margin_sign(["softplus", "rho"]) == 1
    assert E.margin_sign(E.SEEDS["ipo_like"]) is None
    assert E.margin_sign(["const", 2.0]) == 0
    tree = ["sub", ["softplus", "r"], ["neg", ["tanh", "c"]]]
    assert E.polarity(tree, (0,)) == 1 and E.polarity(tree, (1,)) == -1 and E.polarity(tree, (1, 0)) == 1
    assert E.polarity(["square", "rho"], (0,)) == 0


def test_replace_and_get_at():
    tree = E.SEEDS["bco_pair"]
    new = E.replace_at(tree, (1, 0), "rho")
    assert E.get_at(new, (1, 0)) == "rho" and E.get_at(tree, (1, 0)) == "r"  # copy, not in place


# --------------------------------------------------------------------------------------------------
# Generation and the cheap check
# --------------------------------------------------------------------------------------------------


def test_random_tree_respects_depth_and_is_deterministic():
    for d in range(1, 7):
        rng = random.Random(d)
        for _ in range(50):
            t = E.random_tree(rng, d, rng.choice([-1, 0]))
            assert E.is_tree(t) and E.depth(t) <= d and not isinstance(t, str)
    assert E.random_tree(random.Random("a"), 5, -1) == E.random_tree(random.Random("a"), 5, -1)


def test_signed_generation_is_mostly_valid():
    rng = random.Random(0)
    signed = sum(E.check_tree(E.random_tree(rng, 4, -1)) is None for _ in range(200)) / 200
    free = sum(E.check_tree(E.random_tree(rng, 4, 0)) is None for _ in range(200)) / 200
    assert signed > 0.7 and signed > free + 0.4  # measured (1000 / 500 draws): 0.82 vs 0.12


@pytest.mark.parametrize(
    "tree, reason",
    [
        (["softplus", "rho"], "prefer"),
        (["const", 1.0], "constant"),
        (["relu", ["sub", "rho", ["const", 5000.0]]], "zero gradient"),
        (["softplus", ["neg", "c"]], "zero gradient w.r.t. the policy rejected"),  # the sandbox needs both
        (["square", ["sub", "c", ["const", 0.5]]], "zero gradient w.r.t. the policy rejected"),
        (["mul", ["exp", "rho"], ["exp", ["exp", "c"]]], None),
        (["square", ["square", ["square", ["square", ["exp", "rho"]]]]], "non-finite"),
    ],
)
def test_check_tree_reasons(tree, reason):
    got = E.check_tree(tree)
    if reason is None:
        assert got is None or "non-finite" not in got  # clamped exp never overflows on its own
    else:
        assert got is not None and reason in got


def test_exp_is_clamped_in_code_and_evaluate():
    tree = ["exp", ["exp", ["neg", "rho"]]]
    rho = torch.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    out = E.evaluate(tree, rho, rho, rho)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(rho.grad).all()
    assert "torch.clamp(" in E.render(tree)
