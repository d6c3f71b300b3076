"""Monotonicity in the margin: the sign of a tree (``margin_sign``) and of a position in it (``polarity``).

What this module guarantees
---------------------------
* Both are sound but incomplete: a known sign is right, and ``None`` (``margin_sign``) or 0
  (``polarity``) means unknown. Generation uses them to bias toward losses that decrease in the margin.
"""

from __future__ import annotations

import math

from lossforge.proposers.gp.expressions.evaluation import const_value
from lossforge.proposers.gp.expressions.tree import (
    _TERMINAL_SIGN,
    INCREASING_UNARY,
    NONMONOTONE_UNARY,
    Tree,
    children,
    has_vars,
)


# --------------------------------------------------------------------------------------------------
# Monotonicity in the margin (used to bias generation toward valid losses)
# --------------------------------------------------------------------------------------------------


def margin_sign(tree: Tree) -> int | None:
    """+1 if the tree is non-decreasing in the margin (in c, non-increasing in r), -1 if
    non-increasing, 0 if constant, None if unknown. Sound but incomplete (None is conservative)."""

    def combine(a: int | None, b: int | None) -> int | None:
        if a is None or b is None:
            return None
        if a == 0:
            return b
        if b == 0 or a == b:
            return a
        return None

    def flip(s: int | None) -> int | None:
        return None if s is None else -s

    def go(node: Tree) -> int | None:
        if isinstance(node, str):
            return _TERMINAL_SIGN[node]
        if not has_vars(node):
            return 0
        op = node[0]
        if op == "neg":
            return flip(go(node[1]))
        if op in INCREASING_UNARY:
            return go(node[1])
        if op in NONMONOTONE_UNARY:
            return None
        if op == "scale":
            s = go(node[2])
            return None if s is None else (s if node[1] > 0 else -s if node[1] < 0 else 0)
        if op in ("add", "max", "min"):
            return combine(go(node[1]), go(node[2]))
        if op == "sub":
            return combine(go(node[1]), flip(go(node[2])))
        if op == "mul":
            for k, other in ((node[1], node[2]), (node[2], node[1])):
                if not has_vars(k):
                    v = const_value(k)
                    s = go(other)
                    return None if s is None or math.isnan(v) else (s if v > 0 else -s if v < 0 else 0)
            return None
        if op == "mix":
            if not has_vars(node[3]):
                return combine(go(node[1]), go(node[2]))
            return None
        return None

    return go(tree)


def polarity(tree: Tree, path: tuple[int, ...]) -> int:
    """Sign of d(root)/d(subtree at path): +1, -1, or 0 when unknown or not monotone."""
    sign = 1
    node = tree
    for i in path:
        op = node[0]
        if op == "neg":
            sign = -sign
        elif op in NONMONOTONE_UNARY:
            return 0
        elif op == "scale":
            sign *= 1 if node[1] > 0 else -1 if node[1] < 0 else 0
        elif op == "sub" and i == 1:
            sign = -sign
        elif op == "mul":
            other = node[2] if i == 0 else node[1]
            if has_vars(other):
                return 0
            v = const_value(other)
            sign *= 1 if v > 0 else -1 if v < 0 else 0
        elif op == "mix" and i == 2:
            return 0
        if sign == 0:
            return 0
        node = children(node)[i]
    return sign
