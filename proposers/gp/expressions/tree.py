"""The nodes of the expression language and their structure: the op tables, ``Tree``, ``TreeError``,
validation, and the walks every other module of the language is built on.

What this module guarantees
---------------------------
* ``validate`` raises ``TreeError`` for anything that is not a well-formed tree; ``normalize`` returns a
  validated copy with lists and floats only (as read back from JSON).
* The structure functions (``children``, ``with_children``, ``subtrees``, ``get_at``, ``replace_at``,
  ``size``, ``depth``, ``has_vars``, ``op_names``) never modify their argument; ``replace_at`` and
  ``with_children`` return copies.
"""

from __future__ import annotations

import copy
import math
from typing import Any, TypeAlias

from lossforge.errors import UsageError

#: A tree: a terminal name or a nested list (see the module docstring). JSON-serialisable.
Tree: TypeAlias = Any

TERMINALS: tuple[str, ...] = ("rho", "c", "r")
#: Unary ops that are non-decreasing in their argument.
INCREASING_UNARY: tuple[str, ...] = ("logsigmoid", "softplus", "sigmoid", "tanh", "relu", "exp")
NONMONOTONE_UNARY: tuple[str, ...] = ("square", "abs", "log1p_abs")
UNARY_OPS: tuple[str, ...] = ("neg",) + INCREASING_UNARY + NONMONOTONE_UNARY
BINARY_OPS: tuple[str, ...] = ("add", "sub", "mul", "max", "min")
COMMUTATIVE_OPS: tuple[str, ...] = ("add", "mul", "max", "min")
#: exp is emitted as exp(clamp(x, max=EXP_CLAMP)): at most e^20 ~ 4.9e8, so no overflow in float32.
EXP_CLAMP = 20.0

_TERMINAL_SIGN = {"rho": 1, "c": 1, "r": -1}


class TreeError(UsageError):
    """A value is not a well-formed expression tree."""


# --------------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(tree: Tree) -> None:
    """Raise ``TreeError`` unless ``tree`` is a well-formed tree (lists or tuples, ints or floats)."""
    if isinstance(tree, str):
        if tree not in TERMINALS:
            raise TreeError(f"unknown terminal {tree!r}")
        return
    if not isinstance(tree, (list, tuple)) or not tree or not isinstance(tree[0], str):
        raise TreeError(f"not a tree node: {tree!r}")
    op = tree[0]
    if op == "const":
        if len(tree) != 2 or not _is_number(tree[1]):
            raise TreeError(f"bad const node: {tree!r}")
    elif op == "scale":
        if len(tree) != 3 or not _is_number(tree[1]) or not math.isfinite(tree[1]):
            raise TreeError(f"bad scale node: {tree!r}")
        validate(tree[2])
    elif op == "mix":
        if len(tree) != 5 or not _is_number(tree[4]) or not (math.isfinite(tree[4]) and tree[4] > 0):
            raise TreeError(f"bad mix node (needs a, b, gate, tau > 0): {tree!r}")
        for child in tree[1:4]:
            validate(child)
    elif op in UNARY_OPS:
        if len(tree) != 2:
            raise TreeError(f"unary op {op!r} takes one argument: {tree!r}")
        validate(tree[1])
    elif op in BINARY_OPS:
        if len(tree) != 3:
            raise TreeError(f"binary op {op!r} takes two arguments: {tree!r}")
        validate(tree[1])
        validate(tree[2])
    else:
        raise TreeError(f"unknown op {op!r}")


def normalize(tree: Tree) -> Tree:
    """A validated copy of ``tree`` with lists only and floats only (as read back from JSON)."""
    validate(tree)
    return _normalize(tree)


def _normalize(tree: Tree) -> Tree:
    if isinstance(tree, str):
        return tree
    op = tree[0]
    if op == "const":
        return ["const", float(tree[1]) + 0.0]
    if op == "scale":
        return ["scale", float(tree[1]) + 0.0, _normalize(tree[2])]
    if op == "mix":
        return ["mix", _normalize(tree[1]), _normalize(tree[2]), _normalize(tree[3]), float(tree[4])]
    return [op] + [_normalize(t) for t in tree[1:]]


def is_tree(obj: Any) -> bool:
    """True if ``obj`` is a well-formed tree."""
    try:
        validate(obj)
    except (TreeError, TypeError, RecursionError):
        return False
    return True


def children(tree: Tree) -> list[Tree]:
    """The subtrees of a node (not its numeric parameters), in order."""
    if isinstance(tree, str) or tree[0] == "const":
        return []
    if tree[0] == "scale":
        return [tree[2]]
    if tree[0] == "mix":
        return [tree[1], tree[2], tree[3]]
    return list(tree[1:])


def with_children(tree: Tree, kids: list[Tree]) -> Tree:
    """A copy of node ``tree`` with its subtrees replaced by ``kids`` (parameters kept)."""
    if isinstance(tree, str) or tree[0] == "const":
        return copy.deepcopy(tree)
    if tree[0] == "scale":
        return ["scale", tree[1], kids[0]]
    if tree[0] == "mix":
        return ["mix", kids[0], kids[1], kids[2], tree[4]]
    return [tree[0]] + list(kids)


def subtrees(tree: Tree) -> list[tuple[tuple[int, ...], Tree]]:
    """All (path, subtree) pairs in preorder; a path is a tuple of indices into ``children``."""
    out: list[tuple[tuple[int, ...], Tree]] = []

    def walk(node: Tree, path: tuple[int, ...]) -> None:
        out.append((path, node))
        for i, kid in enumerate(children(node)):
            walk(kid, path + (i,))

    walk(tree, ())
    return out


def get_at(tree: Tree, path: tuple[int, ...]) -> Tree:
    """The subtree at ``path``."""
    for i in path:
        tree = children(tree)[i]
    return tree


def replace_at(tree: Tree, path: tuple[int, ...], new: Tree) -> Tree:
    """A copy of ``tree`` with the subtree at ``path`` replaced by (a copy of) ``new``."""
    if not path:
        return copy.deepcopy(new)
    kids = [copy.deepcopy(k) for k in children(tree)]
    kids[path[0]] = replace_at(kids[path[0]], path[1:], new)
    return with_children(tree, kids)


def size(tree: Tree) -> int:
    """Number of nodes (terminals and constants count one)."""
    return 1 + sum(size(k) for k in children(tree))


def depth(tree: Tree) -> int:
    """Longest path from the root to a leaf, in edges (a terminal has depth 0)."""
    kids = children(tree)
    return 0 if not kids else 1 + max(depth(k) for k in kids)


def has_vars(tree: Tree) -> bool:
    """True if the tree mentions a terminal (rho, c or r)."""
    if isinstance(tree, str):
        return True
    return any(has_vars(k) for k in children(tree))


def op_names(tree: Tree) -> list[str]:
    """Node labels in preorder (terminals by name, other nodes by op)."""
    return [n if isinstance(n, str) else n[0] for _, n in subtrees(tree)]
