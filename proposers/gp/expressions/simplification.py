"""Simplifying a tree and the canonical key that deduplicates trees.

What this module guarantees
---------------------------
* ``simplify`` removes trivial structure (double negation, ``x*1``, ``x+0``, constant folding, ...)
  without changing the value on finite inputs beyond float rounding; ``canonical_key`` is equal for
  trees that are equal up to simplification, commutativity and associativity of add/mul/max/min.
"""

from __future__ import annotations

import math

from lossforge.proposers.gp.expressions.evaluation import _s_sigmoid, const_value
from lossforge.proposers.gp.expressions.tree import (
    COMMUTATIVE_OPS,
    Tree,
    _normalize,
    children,
    has_vars,
    validate,
    with_children,
)


# --------------------------------------------------------------------------------------------------
# Simplification and canonical keys
# --------------------------------------------------------------------------------------------------


def _is_const(node: Tree, value: float | None = None) -> bool:
    return (
        isinstance(node, list)
        and node[0] == "const"
        and (value is None or node[1] == value)
    )


def _simplify_node(node: Tree) -> Tree:
    """One bottom-up rewrite of a node whose children are already simplified."""
    if isinstance(node, str):
        return node
    op = node[0]
    if op == "const":
        return ["const", float(node[1]) + 0.0]
    if all(_is_const(k) for k in children(node)):  # children are simplified: constant means folded
        v = const_value(node)
        if math.isfinite(v):
            return ["const", v + 0.0]
        return node
    if op == "neg":
        x = node[1]
        if isinstance(x, list) and x[0] == "neg":
            return x[1]
        if isinstance(x, list) and x[0] == "scale":
            return ["scale", -x[1] + 0.0, x[2]]
        if isinstance(x, list) and x[0] == "sub":
            return ["sub", x[2], x[1]]
        return node
    if op == "scale":
        k, x = node[1], node[2]
        if k == 1.0:
            return x
        if k == 0.0:
            return ["const", 0.0]
        if k == -1.0:
            return ["neg", x]
        if isinstance(x, list) and x[0] == "scale":
            return ["scale", k * x[1], x[2]]
        if isinstance(x, list) and x[0] == "neg":
            return ["scale", -k + 0.0, x[1]]
        return node
    if op in ("abs", "log1p_abs", "square"):
        x = node[1]
        if isinstance(x, list) and x[0] in ("neg", "abs"):
            return [op, x[1]]
        if op == "abs" and isinstance(x, list) and x[0] == "square":
            return x
        return node
    if op == "relu":
        x = node[1]
        if isinstance(x, list) and x[0] == "relu":
            return x
        return node
    if op == "add":
        a, b = node[1], node[2]
        if _is_const(a, 0.0):
            return b
        if _is_const(b, 0.0):
            return a
        if a == b:
            return ["scale", 2.0, a]
        if isinstance(b, list) and b[0] == "neg":
            return ["sub", a, b[1]]
        if isinstance(a, list) and a[0] == "neg":
            return ["sub", b, a[1]]
        if isinstance(b, list) and b[0] == "scale" and b[1] < 0:
            return ["sub", a, ["scale", -b[1], b[2]]]
        if _is_const(b) and b[1] < 0:
            return ["sub", a, ["const", -b[1]]]
        return node
    if op == "sub":
        a, b = node[1], node[2]
        if _is_const(b, 0.0):
            return a
        if _is_const(a, 0.0):
            return ["neg", b]
        if a == b:
            return ["const", 0.0]
        if isinstance(b, list) and b[0] == "neg":
            return ["add", a, b[1]]
        if isinstance(b, list) and b[0] == "scale" and b[1] < 0:
            return ["add", a, ["scale", -b[1], b[2]]]
        if _is_const(b) and b[1] < 0:
            return ["add", a, ["const", -b[1]]]
        return node
    if op == "mul":
        a, b = node[1], node[2]
        if _is_const(b):
            a, b = b, a
        if _is_const(a):
            if a[1] == 0.0:
                return ["const", 0.0]
            return ["scale", a[1], b]
        if a == b:
            return ["square", a]
        return node
    if op in ("max", "min"):
        return node[1] if node[1] == node[2] else node
    if op == "mix":
        a, b, x, tau = node[1], node[2], node[3], node[4]
        if a == b:
            return a
        if not has_vars(x):
            g = _s_sigmoid(const_value(x) / tau)
            if g == 0.0:
                return a
            if g == 1.0:
                return b
        return node
    return node


def simplify(tree: Tree) -> Tree:
    """A simplified copy of ``tree`` (double negation, x*1, x+0, x-x, constant folding, ...)."""
    validate(tree)
    tree = _normalize(tree)

    def once(node: Tree) -> Tree:
        if isinstance(node, str):
            return node
        node = with_children(node, [once(k) for k in children(node)])
        return _simplify_node(node)

    for _ in range(20):
        new = once(tree)
        if new == tree:
            break
        tree = new
    return tree


def _key(node: Tree) -> str:
    if isinstance(node, str):
        return node
    op = node[0]
    if op == "const":
        return format(node[1], ".6g")
    if op in COMMUTATIVE_OPS:
        flat: list[Tree] = []

        def collect(n: Tree) -> None:
            if isinstance(n, list) and n[0] == op:
                collect(n[1])
                collect(n[2])
            else:
                flat.append(n)

        collect(node)
        return f"({op} {' '.join(sorted(_key(k) for k in flat))})"
    params = ""
    if op == "scale":
        params = format(node[1], ".6g") + " "
    if op == "mix":
        params = format(node[4], ".6g") + " "
    return f"({op} {params}{' '.join(_key(k) for k in children(node))})"


def canonical_key(tree: Tree) -> str:
    """A string equal for trees equal up to simplification and commutativity/associativity."""
    return _key(simplify(tree))
