"""Random generation: constants and trees drawn from the grammar, optionally biased by a margin sign.

What this module guarantees
---------------------------
* ``random_tree(rng, max_depth, sign)`` is a pure function of the state of ``rng`` and its arguments; the
  tree has depth <= ``max_depth``.

What it does not guarantee
--------------------------
* Signed generation biases toward losses that decrease (or increase) in the margin but does not
  guarantee it.
"""

from __future__ import annotations

import copy
import random

from lossforge.proposers.gp.expressions.tree import (
    BINARY_OPS,
    INCREASING_UNARY,
    NONMONOTONE_UNARY,
    UNARY_OPS,
    Tree,
    children,
    depth,
    op_names,
    with_children,
)


# --------------------------------------------------------------------------------------------------
# Random generation
# --------------------------------------------------------------------------------------------------

_NICE_CONSTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_NICE_SCALES = (0.1, 0.25, 0.5, 2.0, 3.0, 5.0, 10.0)
_NICE_TAUS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0)


def random_const(rng: random.Random) -> float:
    """A constant: a 'nice' value most of the time, else a uniform draw rounded to two decimals."""
    if rng.random() < 0.6:
        return rng.choice(_NICE_CONSTS)
    v = round(rng.uniform(-3.0, 3.0), 2)
    return v if v != 0.0 else 0.5


def _random_leaf(rng: random.Random, sign: int) -> Tree:
    if sign > 0:  # rho most often: only rho reaches both policy inputs on its own
        return rng.choice(("rho", "rho", "rho", "c"))
    if sign < 0:
        return "r"
    if rng.random() < 0.12:
        return ["const", random_const(rng)]
    return rng.choice(("rho", "rho", "c", "r"))


def _weighted(rng: random.Random, table: list[tuple[str, float]]) -> str:
    total = sum(w for _, w in table)
    x = rng.random() * total
    for name, w in table:
        x -= w
        if x < 0:
            return name
    return table[-1][0]


_SIGNED_TABLE: list[tuple[str, float]] = (
    [(u, 1.0) for u in INCREASING_UNARY]
    + [("neg", 2.5), ("scale", 1.0), ("add", 1.5), ("sub", 1.5), ("max", 0.4), ("min", 0.4), ("mix", 0.7)]
    + [(u, 0.25) for u in NONMONOTONE_UNARY]
    + [("mul", 0.3)]
)
_FREE_TABLE: list[tuple[str, float]] = (
    [(u, 1.0) for u in UNARY_OPS] + [(b, 1.0) for b in BINARY_OPS] + [("scale", 1.0), ("mix", 0.7)]
)


def random_tree(rng: random.Random, max_depth: int, sign: int = 0, *, leaf_prob: float = 0.3) -> Tree:
    """A random tree of depth <= ``max_depth`` (the root is never a bare leaf when max_depth >= 1).

    ``sign`` = -1 asks for a loss that decreases in the margin (a valid loss shape), +1 for one that
    increases, 0 for no constraint: signed generation propagates the sign through monotone ops, so it
    holds for most draws, and uses non-monotone ops only rarely.
    """

    def grow(d: int, s: int, root: bool) -> Tree:
        if d <= 0 or (not root and rng.random() < leaf_prob + 0.1 * (max_depth - d)):
            if s < 0 and d >= 1 and rng.random() < 0.75:  # -rho / -c: the usual decreasing leaf
                return ["neg", _random_leaf(rng, 1)]
            return _random_leaf(rng, s)
        op = _weighted(rng, _SIGNED_TABLE if s else _FREE_TABLE)
        if op in INCREASING_UNARY:
            return [op, grow(d - 1, s, False)]
        if op == "neg":
            return ["neg", grow(d - 1, -s, False)]
        if op in NONMONOTONE_UNARY:
            return [op, grow(d - 1, s, False)]
        if op == "scale":
            k = rng.choice(_NICE_SCALES) * (1 if (s or rng.random() < 0.7) else -1)
            if s and rng.random() < 0.2:
                return ["scale", -k, grow(d - 1, -s, False)]
            return ["scale", k, grow(d - 1, s, False)]
        if op in ("add", "max", "min"):
            if s and rng.random() < 0.35:
                return [op, grow(d - 1, s, False), ["const", random_const(rng)]]
            return [op, grow(d - 1, s, False), grow(d - 1, s, False)]
        if op == "sub":
            if s and rng.random() < 0.35:
                if rng.random() < 0.5:
                    return ["sub", grow(d - 1, s, False), ["const", random_const(rng)]]
                return ["sub", ["const", random_const(rng)], grow(d - 1, -s, False)]
            return ["sub", grow(d - 1, s, False), grow(d - 1, -s, False)]
        if op == "mul":
            return ["mul", grow(d - 1, 0, False), grow(d - 1, 0, False)]
        # mix
        gate: Tree = "rho" if rng.random() < 0.6 else grow(min(d - 1, 1), 0, False)
        return ["mix", grow(d - 1, s, False), grow(d - 1, s, False), gate, rng.choice(_NICE_TAUS)]

    tree = grow(max_depth, sign, max_depth >= 1)
    if sign and rng.random() < 0.8:
        tree = _reach_both_inputs(tree, max_depth)
    return tree


def _substitute(tree: Tree, old: str, new: Tree) -> Tree:
    if isinstance(tree, str):
        return copy.deepcopy(new) if tree == old else tree
    return with_children(tree, [_substitute(k, old, new) for k in children(tree)])


def _reach_both_inputs(tree: Tree, max_depth: int) -> Tree:
    """Make a one-sided tree (only c, or only r) depend on the margin instead, keeping its sign:
    the sandbox requires a gradient w.r.t. both policy log-probs, and only rho gives that alone."""
    names = set(op_names(tree))
    if "rho" in names or {"c", "r"} <= names:
        return tree
    if "c" in names:
        return _substitute(tree, "c", "rho")
    if "r" in names:
        new = _substitute(tree, "r", ["neg", "rho"])
        return new if depth(new) <= max_depth else tree
    return tree
