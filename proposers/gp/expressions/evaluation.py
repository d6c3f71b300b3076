"""Evaluating a tree: in Python floats (the scalar mirror, for subtrees without a terminal) and in torch.

What this module guarantees
---------------------------
* ``evaluate(tree, rho, c, r)`` computes bit-for-bit what the rendered code computes when given the
  terminals from ``terminals(...)`` (same torch ops in the same order; subtrees without a terminal are
  folded to one Python float by ``const_value`` in both).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from lossforge.proposers.gp.expressions.tree import (
    EXP_CLAMP,
    UNARY_OPS,
    Tree,
    TreeError,
    _normalize,
    children,
    validate,
)


# --------------------------------------------------------------------------------------------------
# Scalar mirror (for subtrees without a terminal), torch evaluation
# --------------------------------------------------------------------------------------------------


def _s_softplus(v: float) -> float:
    if math.isnan(v):
        return v
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _s_sigmoid(v: float) -> float:
    if math.isnan(v):
        return v
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


_SCALAR_UNARY = {
    "neg": lambda v: -v,
    "logsigmoid": lambda v: -_s_softplus(-v),
    "softplus": _s_softplus,
    "sigmoid": _s_sigmoid,
    "tanh": math.tanh,
    "relu": lambda v: max(v, 0.0) if not math.isnan(v) else v,
    "square": lambda v: v * v,
    "abs": abs,
    "exp": lambda v: math.exp(min(v, EXP_CLAMP)) if not math.isnan(v) else v,
    "log1p_abs": lambda v: math.log1p(abs(v)),
}


def const_value(tree: Tree) -> float:
    """The value of a tree without terminals, in Python floats (raises ``TreeError`` if it has one)."""
    if isinstance(tree, str):
        raise TreeError(f"terminal {tree!r} has no constant value")
    op = tree[0]
    if op == "const":
        return float(tree[1])
    if op == "scale":
        return tree[1] * const_value(tree[2])
    if op == "mix":
        a, b, x = const_value(tree[1]), const_value(tree[2]), const_value(tree[3])
        g = _s_sigmoid(x / tree[4])
        return a * (1.0 - g) + b * g
    if op in UNARY_OPS:
        return float(_SCALAR_UNARY[op](const_value(tree[1])))
    a, b = const_value(tree[1]), const_value(tree[2])
    try:
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
    except OverflowError:  # pragma: no cover - float arithmetic returns inf, kept for safety
        return math.inf
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b) if op == "max" else min(a, b)


def terminals(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rho, c, r) computed exactly as the rendered code computes them."""
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    c = beta * (policy_chosen_logps - reference_chosen_logps)
    r = beta * (policy_rejected_logps - reference_rejected_logps)
    return rho, c, r


_TORCH_UNARY = {
    "neg": lambda x: -x,
    "logsigmoid": F.logsigmoid,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "square": torch.square,
    "abs": torch.abs,
    "exp": lambda x: torch.exp(torch.clamp(x, max=EXP_CLAMP)),
    "log1p_abs": lambda x: torch.log1p(torch.abs(x)),
}


def evaluate(tree: Tree, rho: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The loss per pair for terminal tensors of shape (batch,); identical to the rendered code."""
    validate(tree)
    tree = _normalize(tree)
    env = {"rho": rho, "c": c, "r": r}

    def ev(node: Tree) -> Any:
        # A subtree without terminals evaluates to a Python float (exactly what render emits as a literal).
        if isinstance(node, str):
            return env[node]
        op = node[0]
        if op == "const":
            return node[1]
        kids = [ev(k) for k in children(node)]
        if all(isinstance(k, float) for k in kids):
            return const_value(node)
        if op == "scale":
            return node[1] * kids[0]
        if op in UNARY_OPS:
            return _TORCH_UNARY[op](kids[0])
        if op == "mix":
            a, b, x = kids
            g = torch.sigmoid(x / node[4]) if not isinstance(x, float) else _s_sigmoid(x / node[4])
            return a * (1.0 - g) + b * g
        a, b = kids
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op in ("max", "min"):
            key = "min" if op == "max" else "max"
            if isinstance(a, float):
                return torch.clamp(b, **{key: a})
            if isinstance(b, float):
                return torch.clamp(a, **{key: b})
            return torch.maximum(a, b) if op == "max" else torch.minimum(a, b)
        raise TreeError(f"unknown op {op!r}")  # pragma: no cover - validated trees never get here

    out = ev(tree)
    if isinstance(out, float):
        return torch.full_like(rho, out)
    return out
