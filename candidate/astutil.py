"""Small readers of a candidate's AST for the static policy (``lossforge.candidate.policy``): a short
snippet of a node, its line, a dotted name, the value of an int literal, how many times a loop runs when
literals say so, the names a function assigns, and the size and depth of a tree.

What this module guarantees
---------------------------
* Pure functions of the nodes they are given: they never modify a node and never raise for a parsed
  tree (``_depth`` walks iteratively, so deep trees do not hit the recursion limit).
"""
from __future__ import annotations

import ast


def _snippet(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse is total on parsed trees
        text = type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


def _dotted(node: ast.AST) -> str:
    """``torch.nn.functional.x`` for an attribute chain, or the snippet of the expression."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return _snippet(node) if not parts else f"({_snippet(node, 30)}).{'.'.join(reversed(parts))}"


def _int_literal(node: ast.AST) -> int | None:
    """The value of an int literal (``5``, ``-5``), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _int_literal(node.operand)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


def _iteration_bound(node: ast.AST, bounded: dict[str, int] | None = None) -> int | None:
    """How many times a loop over ``node`` runs, when that is known from literals (or from a local name
    bound to such a literal, in ``bounded``); else None."""
    bounded = bounded or {}
    if isinstance(node, ast.Name):
        return bounded.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return None
        return len(node.elts)
    if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
        total = 1
        for gen in node.generators:
            inner = _iteration_bound(gen.iter, bounded)
            if inner is None:
                return None
            total *= inner
        return total
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id == "range" and 1 <= len(node.args) <= 3:
            values = [_int_literal(a) for a in node.args]
            if any(v is None for v in values):
                return None
            if len(values) == 3 and values[2] == 0:
                return None
            return len(range(*values))
        if node.func.id in ("zip", "enumerate", "tuple", "list", "reversed") and node.args:
            args = node.args if node.func.id == "zip" else node.args[:1]
            bounds = [_iteration_bound(a, bounded) for a in args]
            if any(b is None for b in bounds):
                return None
            return min(bounds)
    return None


def _assigned_names(fn: ast.FunctionDef) -> set[str]:
    names = {a.arg for a in fn.args.args}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _depth(tree: ast.AST) -> tuple[int, int]:
    """(number of nodes, maximum depth) of the tree, iteratively."""
    count, deepest = 0, 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return count, deepest
