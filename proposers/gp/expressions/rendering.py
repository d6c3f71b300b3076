"""Rendering a tree: as candidate source (``render``) and as a compact formula (``to_infix``).

What this module guarantees
---------------------------
* ``render(tree, name)`` returns deterministic, readable candidate source: the fixed import preamble
  and exactly one top-level function with the candidate signature, computing the terminals it uses once
  at the top, then the expression (long ones split into a few named intermediate lines), then
  ``return losses`` of shape ``(batch,)``. It uses only ``torch``, ``F`` and ``math``, and computes
  exactly ``evaluate(tree, *terminals(...))`` (the emitter mirrors the order of ``evaluate``'s torch ops).
"""

from __future__ import annotations

import keyword
import math
import re
import textwrap

from lossforge.proposers.gp.expressions.evaluation import _s_sigmoid, const_value
from lossforge.proposers.gp.expressions.tree import (
    EXP_CLAMP,
    TERMINALS,
    UNARY_OPS,
    Tree,
    TreeError,
    _normalize,
    children,
    has_vars,
    op_names,
    validate,
)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

_ADD, _MUL, _NEG, _ATOM = 1, 2, 3, 4
_ROOT_SPLIT = 60  # the root expression is split into named lines when longer than this
_INNER_SPLIT = 88  # inner expressions are split when longer than this

_TORCH_CALL = {
    "logsigmoid": "F.logsigmoid({})",
    "softplus": "F.softplus({})",
    "sigmoid": "torch.sigmoid({})",
    "tanh": "torch.tanh({})",
    "relu": "torch.relu({})",
    "square": "torch.square({})",
    "abs": "torch.abs({})",
    "exp": "torch.exp(torch.clamp({}, max=" + repr(EXP_CLAMP) + "))",
    "log1p_abs": "torch.log1p(torch.abs({}))",
}

_TERMINAL_LINES = {
    "rho": "rho = beta * ((policy_chosen_logps - reference_chosen_logps)"
    " - (policy_rejected_logps - reference_rejected_logps))",
    "c": "c = beta * (policy_chosen_logps - reference_chosen_logps)",
    "r": "r = beta * (policy_rejected_logps - reference_rejected_logps)",
}

_TERMINAL_DOC = {
    "rho": "rho = beta * ((pi_c - ref_c) - (pi_r - ref_r))",
    "c": "c = beta * (pi_c - ref_c)",
    "r": "r = beta * (pi_r - ref_r)",
}


def _lit(v: float) -> tuple[str, int]:
    """A Python literal for ``v`` (exact: repr round-trips) and its precedence."""
    v = float(v)
    if math.isnan(v):
        return "math.nan", _ATOM
    if math.isinf(v):
        return ("math.inf", _ATOM) if v > 0 else ("-math.inf", _NEG)
    text = repr(v)
    return text, (_NEG if text.startswith("-") else _ATOM)


def _wrap(expr: str, prec: int, need: int) -> str:
    return f"({expr})" if prec < need else expr


def _wrap_right(expr: str, prec: int, op_prec: int) -> str:
    """Right operand of a left-associative operator: parenthesise equal precedence (keeps the
    evaluation order of the tree) and anything starting with a minus sign (readability)."""
    return f"({expr})" if prec <= op_prec or expr.startswith("-") else expr


class _Emitter:
    """Turns a tree into straight-line Python; the order of torch ops mirrors ``evaluate``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, int] = {}

    def bind(self, expr: str, hint: str) -> str:
        n = self.names.get(hint, 0) + 1
        self.names[hint] = n
        name = hint if n == 1 else f"{hint}_{n}"
        self.lines.append(f"{name} = {expr}")
        return name

    def emit(self, node: Tree, root: bool = False) -> tuple[str, int]:
        if not has_vars(node):
            return _lit(const_value(node))
        if isinstance(node, str):
            return node, _ATOM
        kids = children(node)
        parts = [self.emit(k) for k in kids]
        if node[0] == "mix":  # the gate always gets its own named line (or is a folded constant)
            x, px = parts[2]
            if has_vars(node[3]):
                parts[2] = (self.bind(f"torch.sigmoid({_wrap(x, px, _MUL)} / {_lit(node[4])[0]})", "gate"), _ATOM)
            else:
                parts[2] = _lit(_s_sigmoid(const_value(node[3]) / node[4]))
        expr, prec = self._combine(node, parts)
        limit = _ROOT_SPLIT if root else _INNER_SPLIT
        if len(expr) > limit:
            bound = []
            for kid, (e, p) in zip(kids, parts):
                if p == _ATOM and re.fullmatch(r"[A-Za-z_]\w*", e) or not has_vars(kid):
                    bound.append((e, p))
                else:
                    hint = next((o for o in op_names(kid) if o not in ("scale", "neg")), "expr") + "_term"
                    bound.append((self.bind(e, hint), _ATOM))
            expr, prec = self._combine(node, bound)
        return expr, prec

    def _combine(self, node: Tree, parts: list[tuple[str, int]]) -> tuple[str, int]:
        op = node[0]
        if op == "scale":
            (x, px), = parts
            k, _ = _lit(node[1])
            return f"{k} * {_wrap_right(x, px, _MUL)}", _MUL
        if op == "neg":
            (x, px), = parts
            return f"-{_wrap(x, px, _ATOM)}", _NEG
        if op in _TORCH_CALL:
            (x, _), = parts
            return _TORCH_CALL[op].format(x), _ATOM
        if op in ("add", "sub"):
            (a, pa), (b, pb) = parts
            sym = "+" if op == "add" else "-"
            return f"{_wrap(a, pa, _ADD)} {sym} {_wrap_right(b, pb, _ADD)}", _ADD
        if op == "mul":
            (a, pa), (b, pb) = parts
            return f"{_wrap(a, pa, _MUL)} * {_wrap_right(b, pb, _MUL)}", _MUL
        if op in ("max", "min"):
            (a, pa), (b, pb) = parts
            key = "min" if op == "max" else "max"
            a_const, b_const = not has_vars(node[1]), not has_vars(node[2])
            if a_const:
                return f"torch.clamp({b}, {key}={a})", _ATOM
            if b_const:
                return f"torch.clamp({a}, {key}={b})", _ATOM
            fn = "torch.maximum" if op == "max" else "torch.minimum"
            return f"{fn}({a}, {b})", _ATOM
        if op == "mix":
            (a, pa), (b, pb), (g, _) = parts
            return f"{_wrap(a, pa, _MUL)} * (1.0 - {g}) + {_wrap(b, pb, _MUL)} * {g}", _ADD
        raise TreeError(f"unknown op {op!r}")  # pragma: no cover


def _identifier(name: str) -> str:
    slug = re.sub(r"\W+", "_", name.strip()).strip("_") or "loss"
    if slug[0].isdigit():
        slug = "loss_" + slug
    if keyword.iskeyword(slug) or slug in ("torch", "F", "math"):
        slug += "_loss"
    return slug


def render(tree: Tree, name: str = "evolved_loss") -> str:
    """Candidate source for ``tree``: import preamble plus one function named after ``name``.

    Deterministic; the function computes exactly ``evaluate(tree, *terminals(...))``.
    """
    validate(tree)
    tree = _normalize(tree)
    em = _Emitter()
    used = [t for t in TERMINALS if t in op_names(tree)] or ["rho"]
    if has_vars(tree):
        expr, _ = em.emit(tree, root=True)
    else:
        expr = f"torch.full_like(rho, {_lit(const_value(tree))[0]})"
    defs = ", ".join(_TERMINAL_DOC[t] for t in used)
    doc = textwrap.wrap(
        f"Loss = {to_infix(tree)}, with {defs} (pi: policy, ref: reference log-probs).",
        width=96,
        break_long_words=False,
        break_on_hyphens=False,
    )
    body = ['"""' + doc[0]] + doc[1:]
    body[-1] += '"""'
    body += [_TERMINAL_LINES[t] for t in used] + em.lines + [f"losses = {expr}", "return losses"]
    head = (
        "import math\nimport torch\nimport torch.nn.functional as F\n\n\n"
        f"def {_identifier(name)}(policy_chosen_logps, policy_rejected_logps,\n"
        "        reference_chosen_logps, reference_rejected_logps, beta):\n"
    )
    return head + "".join(f"    {line}\n" for line in body)


def _num(v: float) -> str:
    return format(v, ".4g")


def to_infix(tree: Tree) -> str:
    """A compact human-readable formula, e.g. ``softplus(-rho)`` or ``relu(1 - rho)``."""

    def go(node: Tree) -> tuple[str, int]:
        if isinstance(node, str):
            return node, _ATOM
        op = node[0]
        if op == "const":
            s = _num(node[1])
            return s, (_NEG if s.startswith("-") else _ATOM)
        if op == "scale":
            x, px = go(node[2])
            return f"{_num(node[1])}*{_wrap_right(x, px, _MUL)}", _MUL
        if op == "neg":
            x, px = go(node[1])
            return f"-{_wrap(x, px, _ATOM)}", _NEG
        if op in UNARY_OPS:
            return f"{op}({go(node[1])[0]})", _ATOM
        if op == "mix":
            a, b, x = (go(k)[0] for k in node[1:4])
            return f"mix({a}, {b}; gate=sigmoid({x}/{_num(node[4])}))", _ATOM
        (a, pa), (b, pb) = go(node[1]), go(node[2])
        if op in ("add", "sub"):
            sym = "+" if op == "add" else "-"
            return f"{_wrap(a, pa, _ADD)} {sym} {_wrap_right(b, pb, _ADD)}", _ADD
        if op == "mul":
            return f"{_wrap(a, pa, _MUL)}*{_wrap_right(b, pb, _MUL)}", _MUL
        return f"{op}({a}, {b})", _ATOM

    return go(tree)[0]
