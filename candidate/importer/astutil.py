"""Small AST helpers of the importer: dotted names, constants, snippets, tags on nodes, constant folding
(``_Fold``: ``if``/``elif`` chains on constants keep only their branch) and removing dead stores.

What this module guarantees
---------------------------
* Works on ``ast`` nodes only, never on text and never by running code.
"""
from __future__ import annotations

import ast
import operator
from typing import Any


# --------------------------------------------------------------------------------------------------
# Small AST helpers
# --------------------------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _const(value: Any) -> ast.expr:
    return ast.Constant(value=value)


def _is_const(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant)


def _loads(fn: ast.FunctionDef) -> set[str]:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _snippet(node: ast.AST, limit: int = 70) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tag(node: ast.AST, *keys: str) -> ast.AST:
    """Mark ``node`` with the notes (keys) whose change made it; kept if the node survives folding."""
    node.lf_tags = set(getattr(node, "lf_tags", set())) | set(keys)  # type: ignore[attr-defined]
    return node


def _tags(node: ast.AST) -> set[str]:
    found: set[str] = set()
    for sub in ast.walk(node):
        found |= getattr(sub, "lf_tags", set())
    return found


_CMP = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


class _Fold(ast.NodeTransformer):
    """Folds constant tests: ``"sigmoid" == "sigmoid"``, ``not False``, ``None and x``, ``x if True else y``,
    and ``True * x`` (TRL's ``(not self.reference_free) * ref_logps``) -> ``x``."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        values = [node.left, *node.comparators]
        if all(_is_const(v) or isinstance(v, (ast.List, ast.Tuple)) and all(_is_const(e) for e in v.elts)
               for v in values):
            try:
                consts = [ast.literal_eval(v) for v in values]
                result = all(_CMP[type(op)](a, b) for op, a, b in zip(node.ops, consts, consts[1:]))
            except Exception:  # noqa: BLE001 - leave what does not fold
                return node
            return _tag(_const(result), *_tags(node))
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and _is_const(node.operand):
            return _tag(_const(not node.operand.value), *_tags(node))
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        values = list(node.values)
        while values and _is_const(values[0]):
            first = values[0].value
            if isinstance(node.op, ast.And) and not first or isinstance(node.op, ast.Or) and first:
                return _tag(_const(first), *_tags(node))
            dropped = values.pop(0)
            if len(values) == 1:
                return _tag(values[0], *_tags(dropped))
        if not values:  # pragma: no cover - loop returns first
            return node
        node.values = values
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        if _is_const(node.test):
            return _tag(node.body if node.test.value else node.orelse, *_tags(node.test))
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Mult):
            if _is_const(node.left) and node.left.value is True:
                return _tag(node.right, *_tags(node.left))
            if _is_const(node.right) and node.right.value is True:
                return _tag(node.left, *_tags(node.right))
        return node


def _fold_statements(body: list[ast.stmt], decisions: set[str]) -> list[ast.stmt]:
    """``if`` statements with a constant test replaced by the branch taken, recursively; the notes the
    tests of the folded ``if``s came from are added to ``decisions`` (they chose the branch)."""
    out: list[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and _is_const(stmt.test):
            decisions |= _tags(stmt.test)
            out.extend(_fold_statements(stmt.body if stmt.test.value else stmt.orelse, decisions))
            continue
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                setattr(stmt, name, _fold_statements(inner, decisions) or [ast.Pass()])
        out.append(stmt)
    return out


def _terminates(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements after a top-level ``return`` or ``raise`` are dead."""
    for i, stmt in enumerate(body):
        if isinstance(stmt, (ast.Return, ast.Raise)):
            return body[: i + 1]
    return body


def _assigned_names(fn: ast.FunctionDef) -> set[str]:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _remove_dead_stores(fn: ast.FunctionDef) -> list[str]:
    """Remove assignments to local names that nothing reads (repeat to a fixed point); their names."""
    removed: list[str] = []
    while True:
        used = _loads(fn)
        changed = False

        def prune(body: list[ast.stmt]) -> list[ast.stmt]:
            nonlocal changed
            out = []
            for stmt in body:
                targets: list[ast.expr] = []
                if isinstance(stmt, ast.Assign):
                    targets = stmt.targets
                elif isinstance(stmt, ast.AugAssign):
                    targets = [stmt.target]
                names = []
                for t in targets:
                    if isinstance(t, ast.Name):
                        names.append(t.id)
                    elif isinstance(t, ast.Tuple) and all(isinstance(e, ast.Name) for e in t.elts):
                        names.extend(e.id for e in t.elts)
                    else:
                        names = []
                        break
                if names and not any(n in used for n in names):
                    removed.extend(n for n in names if n not in removed)
                    changed = True
                    continue
                for attr in ("body", "orelse"):
                    inner = getattr(stmt, attr, None)
                    if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                        setattr(stmt, attr, prune(inner) or [ast.Pass()])
                out.append(stmt)
            return out

        fn.body = prune(fn.body) or [ast.Pass()]
        if not changed:
            return removed
