"""The expression language of the offline (evolutionary / random-search) proposers.

A loss is an expression tree over three terminals, all already scaled by beta:

* ``rho`` = beta * ((pi_c - ref_c) - (pi_r - ref_r)), the DPO logit (margin),
* ``c``   = beta * (pi_c - ref_c), the chosen log-ratio,
* ``r``   = beta * (pi_r - ref_r), the rejected log-ratio,

and constants. Trees are plain JSON values (nested lists, strings and floats), so they are stored as a
candidate's ``genome`` in the archive and read back to breed from:

==================  ================================================================================
node                meaning
==================  ================================================================================
``"rho"``, ...      a terminal
``["const", v]``    the constant ``v``
``[u, x]``          a unary op ``u`` in ``UNARY_OPS``: neg, logsigmoid, softplus, sigmoid, tanh, relu,
                    square, abs, exp (emitted as ``exp(clamp(x, max=20))``), log1p_abs (log1p(|x|))
``[b, x, y]``       a binary op ``b`` in ``BINARY_OPS``: add, sub, mul, max, min
``["scale", k, x]`` the constant multiple ``k * x``
``["mix", a, b, x, tau]``  ``a * (1 - g) + b * g`` with the gate ``g = sigmoid(x / tau)``, ``tau > 0``
                    (this is how DiscoPOP/LRML blends its logistic and exponential parts)
==================  ================================================================================

What this module guarantees
---------------------------
* ``render(tree, name)`` returns deterministic, readable candidate source: the fixed import preamble
  and exactly one top-level function with the candidate signature, computing the terminals it uses once
  at the top, then the expression (long ones split into a few named intermediate lines), then
  ``return losses`` of shape ``(batch,)``. It uses only ``torch``, ``F`` and ``math``.
* ``evaluate(tree, rho, c, r)`` computes bit-for-bit what the rendered code computes when given the
  terminals from ``terminals(...)`` (same torch ops in the same order; subtrees without a terminal are
  folded to one Python float in both).
* ``simplify`` removes trivial structure (double negation, ``x*1``, ``x+0``, constant folding, ...)
  without changing the value on finite inputs beyond float rounding; ``canonical_key`` is equal for
  trees that are equal up to simplification, commutativity and associativity of add/mul/max/min.
* ``SEEDS``: the library losses expressible in the language, in a fixed order, already in simplified
  form (see their comments for the two that differ from the library by a factor beta^2: ``ipo_like``,
  ``sppo_hard_like``; and ``discopop``/``cell``, whose exp is clamped, so they equal the library only
  for rho > -20, where the library's own exp has not yet grown past e^20).
* ``check_tree`` is a cheap numeric pre-filter (one batched forward and backward on a fixed grid) that
  mirrors the sandbox's main rejection reasons: non-finite values or gradients for margins up to
  +-1000, no gradient w.r.t. one of the policy log-probs, or not preferring the chosen answer.

What it does not guarantee
--------------------------
* ``check_tree`` is not the sandbox: it is a heuristic used to bias generation, so a tree passing it
  can still be rejected downstream (and the other way round).
* Generation helpers (``random_tree``) bias toward losses that decrease in the margin but do not
  guarantee it; nothing here trains or scores a loss.
"""

from __future__ import annotations

import copy
import keyword
import math
import random
import re
import textwrap
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F

__all__ = [
    "Tree",
    "TreeError",
    "TERMINALS",
    "UNARY_OPS",
    "INCREASING_UNARY",
    "NONMONOTONE_UNARY",
    "BINARY_OPS",
    "EXP_CLAMP",
    "SEEDS",
    "seed_trees",
    "validate",
    "normalize",
    "is_tree",
    "children",
    "with_children",
    "subtrees",
    "get_at",
    "replace_at",
    "size",
    "depth",
    "has_vars",
    "const_value",
    "terminals",
    "evaluate",
    "render",
    "to_infix",
    "simplify",
    "canonical_key",
    "margin_sign",
    "polarity",
    "op_names",
    "random_const",
    "random_tree",
    "check_tree",
]

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


class TreeError(ValueError):
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


# --------------------------------------------------------------------------------------------------
# Seeds: library losses expressible in the language
# --------------------------------------------------------------------------------------------------

_NEG_RHO: Tree = ["neg", "rho"]

#: name -> tree, in the order the evolutionary proposer emits them. All terminals are beta-scaled.
SEEDS: dict[str, Tree] = {
    # DPO: -logsigmoid(rho) = softplus(-rho).
    "dpo": ["softplus", _NEG_RHO],
    # SLiC / hinge: relu(1 - rho).
    "slic": ["relu", ["sub", ["const", 1.0], "rho"]],
    # IPO on the beta-scaled margin: (rho - 1/2)^2 = beta^2 * (margin - 1/(2 beta))^2, i.e. the library
    # IPO times beta^2 (the language has no 1/beta), hence "like".
    "ipo_like": ["square", ["sub", "rho", ["const", 0.5]]],
    # DiscoPOP / LRML, tau = 0.05: (1-g) softplus(-rho) + g exp(-rho), g = sigmoid(rho / 0.05). Equal to
    # the library for rho > -20; below, exp is clamped (its weight g is 0 there, so only NaNs differ).
    "discopop": ["mix", ["softplus", _NEG_RHO], ["exp", _NEG_RHO], "rho", 0.05],
    # NCA-pair: softplus(-c) + 0.5 softplus(c) + 0.5 softplus(r).
    "nca_pair": [
        "add",
        ["add", ["softplus", ["neg", "c"]], ["scale", 0.5, ["softplus", "c"]]],
        ["scale", 0.5, ["softplus", "r"]],
    ],
    # BCO-pair (TRL 1.x, no reward shift): softplus(-c) + softplus(r).
    "bco_pair": ["add", ["softplus", ["neg", "c"]], ["softplus", "r"]],
    # APO-zero: (1 - sigmoid(c)) + sigmoid(r).
    "apo_zero": ["add", ["sub", ["const", 1.0], ["sigmoid", "c"]], ["sigmoid", "r"]],
    # SPPO-hard on beta-scaled log-ratios: (c - 1/2)^2 + (r + 1/2)^2 = beta^2 * library sppo_hard.
    "sppo_hard_like": [
        "add",
        ["square", ["sub", "c", ["const", 0.5]]],
        ["square", ["add", "r", ["const", 0.5]]],
    ],
    # Robust DPO, eps = 0.1: (0.9 softplus(-rho) - 0.1 softplus(rho)) / 0.8.
    "robust_dpo": ["sub", ["scale", 1.125, ["softplus", _NEG_RHO]], ["scale", 0.125, ["softplus", "rho"]]],
    # CELL: 0.5 exp(-rho) + 0.5 softplus(-rho).
    "cell": ["add", ["scale", 0.5, ["exp", _NEG_RHO]], ["scale", 0.5, ["softplus", _NEG_RHO]]],
    # EXO-pair, eps = 1e-3: sigmoid(rho)(logsigmoid(rho) - log(1-eps)) + sigmoid(-rho)(logsigmoid(-rho) - log eps).
    "exo_pair": [
        "add",
        ["mul", ["sigmoid", "rho"], ["add", ["logsigmoid", "rho"], ["const", -math.log1p(-1e-3)]]],
        ["mul", ["sigmoid", _NEG_RHO], ["add", ["logsigmoid", _NEG_RHO], ["const", -math.log(1e-3)]]],
    ],
}


def seed_trees(names: list[str] | None = None) -> list[tuple[str, Tree]]:
    """(name, tree) for the seeds (all, or ``names`` in the given order), as fresh copies."""
    chosen = list(SEEDS) if names is None else list(names)
    unknown = [n for n in chosen if n not in SEEDS]
    if unknown:
        raise KeyError(f"unknown seeds {unknown}; valid names: {', '.join(SEEDS)}")
    return [(n, copy.deepcopy(SEEDS[n])) for n in chosen]


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


# --------------------------------------------------------------------------------------------------
# Cheap numeric pre-filter
# --------------------------------------------------------------------------------------------------

_MARGINS = (-1000.0, -300.0, -30.0, -3.0, -0.3, 0.0, 0.3, 3.0, 30.0, 300.0, 1000.0)
_PREF_MARGINS = (1.0, 3.0, 5.0, 30.0, 300.0, 1000.0)
_PREF_SPLITS = (0.0, 0.25, 0.5, 0.75, 1.0)  # share of the margin carried by the chosen log-ratio
_ORDINARY = 33  # the first _ORDINARY grid points have ordinary log-ratios (|c|, |r| <= 8)


def _grid() -> tuple[list[float], list[float], list[tuple[int, int]]]:
    cs: list[float] = []
    rs: list[float] = []
    g = random.Random(0)
    for _ in range(_ORDINARY):  # like log-probs in [-80, -1] with beta = 0.1
        cs.append(round(g.uniform(-8.0, 8.0), 3))
        rs.append(round(g.uniform(-8.0, 8.0), 3))
    for o in (-500.0, 0.0, 500.0):
        for m in _MARGINS:
            cs.append(o + m / 2)
            rs.append(o - m / 2)
    pref: list[tuple[int, int]] = []  # (index of the pair at +m, index of its mirror at -m)
    for m in _PREF_MARGINS:
        for share in _PREF_SPLITS:
            pref.append((len(cs), len(cs) + 1))
            cs += [share * m, (share - 1.0) * m]  # (c, r) then its mirror (r, c)
            rs += [(share - 1.0) * m, share * m]
    return cs, rs, pref


_GRID_C, _GRID_R, _GRID_PREF = _grid()


def check_tree(tree: Tree) -> str | None:
    """None if the tree passes the cheap checks, else the reason it fails.

    Mirrors the sandbox's checks on a fixed float32 grid: values and gradients finite for margins up to
    +-1000 (chosen/rejected log-ratios up to +-1000 too); a non-zero gradient w.r.t. both the policy
    chosen and rejected log-probs at ordinary log-ratios (|c|, |r| <= 8); and for margins 1, 3, 5, 30,
    300, 1000 the mean loss over five splits of the margin between chosen and rejected is below that of
    the mirrored pairs (chosen and rejected swapped).
    """
    try:
        validate(tree)
    except TreeError as exc:
        return f"malformed: {exc}"
    if not has_vars(tree):
        return "constant: no gradient"
    c = torch.tensor(_GRID_C, dtype=torch.float32, requires_grad=True)
    r = torch.tensor(_GRID_R, dtype=torch.float32, requires_grad=True)
    rho = c - r
    losses = evaluate(tree, rho, c, r)
    if losses.shape != c.shape:
        return f"shape {tuple(losses.shape)}"
    if not bool(torch.isfinite(losses).all()):
        return "non-finite values"
    losses.sum().backward()
    # c.grad and r.grad are the gradients w.r.t. the policy chosen / rejected log-probs, divided by beta
    grads = [g if g is not None else torch.zeros_like(c) for g in (c.grad, r.grad)]
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return "non-finite gradients"
    for g, which in zip(grads, ("chosen", "rejected")):
        if not bool((g[:_ORDINARY] != 0).any()):
            return f"zero gradient w.r.t. the policy {which} log-probs at ordinary margins"
    vals = losses.detach()
    n = len(_GRID_PREF) // len(_PREF_MARGINS)
    for i in range(len(_PREF_MARGINS)):
        block = _GRID_PREF[i * n:(i + 1) * n]
        pos = sum(float(vals[a]) for a, _ in block)
        neg = sum(float(vals[b]) for _, b in block)
        if not pos < neg:
            return f"does not prefer chosen at margin {_PREF_MARGINS[i]:g}"
    return None
