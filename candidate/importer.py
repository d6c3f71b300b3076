"""`lossforge import`: turn a loss written in the forms people have into lossforge's candidate form.

The candidate form (``lossforge.candidate.policy``) is one top-level function::

    def name(policy_chosen_logps, policy_rejected_logps,
             reference_chosen_logps, reference_rejected_logps, beta):
        ...
        return losses  # shape (batch,)

Losses in the field are written otherwise. This module reads Python source with ``ast``, transforms each
loss function it finds with ``ast`` node transforms (never regular expressions) and writes the candidate
back with ``ast.unparse``. It never runs the code: checking the result is the sandbox's job
(``lossforge import`` runs the usual checks on it).

Forms it brings in
------------------
* DiscoPOP's trainer methods (SakanaAI/DiscoPOP, ``src/alignment/gpo.py``) and the seeds of its
  discovery script (``scripts/launch_evo.py``): ``def x(self, policy_chosen_logps, ...,
  reference_rejected_logps)`` using ``self.beta``, typing annotations, ``import torch.nn.functional as F``
  inside the body.
* TRL's older ``DPOTrainer.dpo_loss(self, policy_chosen_logps, ...)`` override (TRL 0.x) that returns
  ``(losses, chosen_rewards, rejected_rewards)`` and branches on ``self.loss_type``.
* Functions (or methods) with TRL's newer argument names ``chosen_logps``, ``rejected_logps``,
  ``ref_chosen_logps``, ``ref_rejected_logps`` (TRL >= 0.12).

What it changes, and says so (``ImportedLoss.changes``)
--------------------------------------------------------
* The signature becomes the candidate's (``self`` dropped, TRL's newer names renamed, ``beta`` added);
  ``self.beta`` / ``self.args.beta`` become ``beta``.
* Other trainer attributes (``self.label_smoothing``, ``self.loss_type``, ``self.args.discopop_tau``...)
  and extra parameters with defaults become constants: the value given in ``settings`` (``--set
  NAME=VALUE``), else the parameter's default, else TRL's ``DPOConfig`` default (``TRL_DEFAULTS``), each
  stated with its value. ``if``/``elif`` chains on such constants are folded, so TRL's multi-loss
  ``dpo_loss`` keeps the branch of its ``loss_type``.
* Device moves (``x.to(self.accelerator.device)``) are dropped; statements that only update trainer state
  or log (``self.running.update(...)``, ``self.store_metrics(...)``) are dropped; ``self.running.mean``
  (TRL 0.x's running mean of rewards for ``bco_pair``, state kept across steps) becomes 0.0, as in TRL
  1.x's stateless ``bco_pair`` (a stated departure).
* A returned tuple ``(losses, chosen_rewards, rejected_rewards)`` keeps ``losses``; values only the
  dropped parts used are removed. A returned ``torch.cat((A, B), 0)`` of a chosen and a rejected half
  (shape ``2 * batch``, TRL 0.x's ``kto_pair``) becomes ``0.5 * (A + B)`` (shape ``batch``; the batch mean,
  which is what training minimises, is unchanged).
* Imports inside the body are removed (the candidate preamble imports ``math``, ``torch`` and ``F``);
  aliases (``import torch.nn.functional as nnf``, ``from torch.nn.functional import logsigmoid``) are
  written as ``F.`` / ``torch.`` / ``math.``; annotations and decorators are dropped; module-level
  literal constants the function reads are copied into its body.
* Source already in the candidate form passes through unchanged.

What it refuses (``ImportResult.refused``, each with the reason)
-----------------------------------------------------------------
* A function that does not take the four log-probs: e.g. TRL's ``compute_loss(self, model, inputs)``
  override works on the model and the batch, not on log-probs.
* A loss that still needs the trainer after the transforms: a call to another method
  (``self.gpo_loss(...)``: a dispatcher; import the method it dispatches to), an attribute with no known
  default (give it with ``settings``), modules other than torch/F/math (numpy...), a parameter without a
  default.

It does not guarantee that an imported loss passes the checks; ``lossforge import`` runs them and
reports. Importing this module does not import torch (``lossforge.config`` uses it to validate
``[search] seed_losses``).
"""
from __future__ import annotations

import ast
import copy
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CANDIDATE_PARAMETERS",
    "TRL_NEW_NAMES",
    "TRL_DEFAULTS",
    "ImportedLoss",
    "ImportResult",
    "ImportError_",
    "import_losses",
    "import_file",
    "import_hint",
    "parse_settings",
    "seed_candidates",
    "seed_problems",
]

#: The candidate's parameters, in order (the same as ``lossforge.candidate.policy.PARAMETERS``).
CANDIDATE_PARAMETERS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "beta",
)

#: TRL >= 0.12 argument names -> the candidate's names.
TRL_NEW_NAMES = {
    "chosen_logps": "policy_chosen_logps",
    "rejected_logps": "policy_rejected_logps",
    "ref_chosen_logps": "reference_chosen_logps",
    "ref_rejected_logps": "reference_rejected_logps",
}

#: Trainer attributes a loss reads, with TRL ``DPOConfig``'s defaults (the same in TRL 0.8 to 1.x where the
#: field exists). ``self.X`` and ``self.args.X`` both read these.
TRL_DEFAULTS: dict[str, Any] = {
    "label_smoothing": 0.0,
    "loss_type": "sigmoid",
    "reference_free": False,
    "discopop_tau": 0.05,
    "f_divergence_type": "reverse_kl",
    "f_divergence_params": None,
    "f_alpha_divergence_coef": 1.0,
    "use_weighting": False,
    "rpo_alpha": None,
    "ld_alpha": None,
    "is_encoder_decoder": False,
    "aux_loss_enabled": False,
}

#: Module-level constants of TRL that ``dpo_loss`` compares against (``trl.trainer.utils``, TRL 0.x).
_TRL_CONSTANTS: dict[str, Any] = {
    "FDivergenceType.REVERSE_KL.value": "reverse_kl",
    "FDivergenceType.JS_DIVERGENCE.value": "js_divergence",
    "FDivergenceType.ALPHA_DIVERGENCE.value": "alpha_divergence",
    "FDivergenceConstants.ALPHA_DIVERGENCE_COEF_DEFAULT": 1.0,
    "FDivergenceConstants.ALPHA_DIVERGENCE_COEF_KEY": "alpha",
}

#: The import preamble of every imported candidate (as ``lossforge.trainer.losses.CANDIDATE_PREAMBLE``).
_PREAMBLE = "import math\nimport torch\nimport torch.nn.functional as F\n"

_MODULES = {"torch": "torch", "torch.nn.functional": "F", "math": "math", "torch.nn": "torch.nn"}
_DEVICE = "__device__"  # placeholder for self.accelerator.device while transforming


class ImportError_(ValueError):
    """The source cannot be read as Python, or names no function to import (the message says why)."""


@dataclass
class ImportedLoss:
    """One loss in the candidate form: ``code`` (a complete candidate module), the function ``name``,
    where it came from (``origin``, ``qualname``) and what was changed, in words (``changes``)."""

    name: str
    qualname: str
    origin: str
    code: str
    changes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """The losses imported from one source and the functions refused, as (qualified name, reason)."""

    imported: list[ImportedLoss] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["loss_type=hinge", "label_smoothing=0.1"]`` -> ``{"loss_type": "hinge", "label_smoothing": 0.1}``.

    A value is read as a Python literal (numbers, True/False/None, quoted strings), else kept as a
    string. Raises ``ValueError`` naming the item when one has no ``=`` or an invalid name.
    """
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. --set label_smoothing=0.1 or --set loss_type=hinge")
        try:
            settings[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            settings[name] = value.strip()
    return settings


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


# --------------------------------------------------------------------------------------------------
# Module-level context: aliases and constants
# --------------------------------------------------------------------------------------------------


@dataclass
class _ModuleContext:
    aliases: dict[str, str]  # local name -> dotted replacement ("F", "torch", "F.logsigmoid", ...)
    foreign: dict[str, str]  # local name -> module it comes from (numpy, trl, ...)
    constants: dict[str, ast.expr]  # module-level NAME = literal
    functions: set[str]  # module-level function names


def _import_aliases(stmt: ast.Import | ast.ImportFrom, aliases: dict[str, str], foreign: dict[str, str]) -> None:
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            local = a.asname or a.name.split(".")[0]
            target = a.name if a.asname else a.name.split(".")[0]
            if target in _MODULES:
                aliases[local] = _MODULES[target]
            else:
                foreign[local] = a.name
        return
    module = stmt.module or ""
    for a in stmt.names:
        local = a.asname or a.name
        full = f"{module}.{a.name}"
        if full in _MODULES:
            aliases[local] = _MODULES[full]
        elif module in _MODULES:
            aliases[local] = f"{_MODULES[module]}.{a.name}"
        else:
            foreign[local] = full


def _module_context(tree: ast.Module) -> _ModuleContext:
    aliases: dict[str, str] = {}
    foreign: dict[str, str] = {}
    constants: dict[str, ast.expr] = {}
    functions: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _import_aliases(stmt, aliases, foreign)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                ast.literal_eval(stmt.value)
            except (ValueError, SyntaxError, TypeError):
                continue
            constants[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.FunctionDef):
            functions.add(stmt.name)
    return _ModuleContext(aliases, foreign, constants, functions)


# --------------------------------------------------------------------------------------------------
# Finding loss functions
# --------------------------------------------------------------------------------------------------


def _positional(fn: ast.FunctionDef) -> list[ast.arg]:
    return [*fn.args.posonlyargs, *fn.args.args]


def _is_method(fn: ast.FunctionDef, in_class: bool) -> bool:
    args = _positional(fn)
    static = any(_dotted(d) == "staticmethod" for d in fn.decorator_list)
    return bool(args) and not static and (in_class or args[0].arg in ("self", "cls"))


def _logps_names(fn: ast.FunctionDef, in_class: bool) -> set[str]:
    args = _positional(fn)[1:] if _is_method(fn, in_class) else _positional(fn)
    names = {a.arg for a in args} | {a.arg for a in fn.args.kwonlyargs}
    return {TRL_NEW_NAMES.get(n, n) for n in names} & set(CANDIDATE_PARAMETERS[:4])


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef, bool]]:
    """(qualified name, node, is in a class) for top-level functions and methods of top-level classes."""
    found = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef):
            found.append((stmt.name, stmt, False))
        elif isinstance(stmt, ast.ClassDef):
            for inner in stmt.body:
                if isinstance(inner, ast.FunctionDef):
                    found.append((f"{stmt.name}.{inner.name}", inner, True))
    return found


def _not_a_loss_reason(qualname: str, fn: ast.FunctionDef, in_class: bool) -> str:
    args = [a.arg for a in _positional(fn)]
    shown = f"{qualname}({', '.join(args)})"
    if {"model", "inputs"} <= set(args) or fn.name == "compute_loss":
        return (f"{shown} works on the model and the batch (it runs the model), not on log-probs: lossforge's "
                "candidate is a function of the four summed log-probs and beta. Move the formula into a function "
                "of (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, "
                "beta), or into a TRL dpo_loss override, and import that.")
    return (f"{shown} does not take the four log-probs (policy_chosen_logps, policy_rejected_logps, "
            "reference_chosen_logps, reference_rejected_logps, or TRL's chosen_logps, rejected_logps, "
            "ref_chosen_logps, ref_rejected_logps).")


# --------------------------------------------------------------------------------------------------
# Transforming one function
# --------------------------------------------------------------------------------------------------


class _Rewrite(ast.NodeTransformer):
    """Names, aliases, trainer attributes, device moves; records what it changed."""

    def __init__(self, *, renames: dict[str, str], ctx: _ModuleContext, self_name: str | None,
                 constants: dict[str, Any], attr_constants: dict[str, Any], attr_locals: set[str],
                 local_names: set[str], notes: dict[str, str]) -> None:
        self.renames = renames
        self.ctx = ctx
        self.self_name = self_name
        self.constants = constants  # parameter name -> value to inline
        self.attr_constants = attr_constants  # trainer attribute -> value to inline
        self.attr_locals = attr_locals  # attributes assigned in the body: become locals
        self.local_names = local_names
        self.notes = notes  # key -> sentence; a note applies if a node tagged with its key survives

    def _note(self, key: str, text: str, node: ast.AST) -> ast.AST:
        self.notes.setdefault(key, text)
        return _tag(node, key)

    def _attr_of_self(self, node: ast.AST) -> str | None:
        """'X' for self.X or self.args.X; None otherwise."""
        if self.self_name is None or not isinstance(node, ast.Attribute):
            return None
        base = node.value
        if isinstance(base, ast.Name) and base.id == self.self_name:
            return node.attr
        if (isinstance(base, ast.Attribute) and base.attr == "args" and isinstance(base.value, ast.Name)
                and base.value.id == self.self_name):
            return node.attr
        return None

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.renames:
            return ast.copy_location(ast.Name(id=self.renames[node.id], ctx=node.ctx), node)
        if isinstance(node.ctx, ast.Load) and node.id not in self.local_names:
            if node.id in self.constants:
                return ast.copy_location(_const(self.constants[node.id]), node)
            if node.id in self.ctx.aliases and node.id != self.ctx.aliases[node.id]:
                replacement = ast.parse(self.ctx.aliases[node.id], mode="eval").body
                return self._note("alias", "module aliases written as torch / F / math",
                                  ast.copy_location(replacement, node))
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        dotted = _dotted(node)
        if dotted in _TRL_CONSTANTS:
            return self._note(f"trl:{dotted}", f"TRL's {dotted} read as {_TRL_CONSTANTS[dotted]!r}",
                              ast.copy_location(_const(_TRL_CONSTANTS[dotted]), node))
        if self.self_name is not None and dotted == f"{self.self_name}.accelerator.device":
            return ast.copy_location(ast.Name(id=_DEVICE, ctx=ast.Load()), node)
        if self.self_name is not None and dotted == f"{self.self_name}.running.mean":
            return self._note("running", "self.running.mean (TRL 0.x's running mean of the rewards, trainer state "
                                         "kept across steps) replaced by 0.0, as in TRL 1.x's stateless bco_pair: a "
                                         "departure from the source", ast.copy_location(_const(0.0), node))
        attr = self._attr_of_self(node)
        if attr is not None:
            if attr == "beta":
                return self._note("beta", "self.beta -> the parameter beta",
                                  ast.copy_location(ast.Name(id="beta", ctx=node.ctx), node))
            if attr in self.attr_locals:
                return _tag(ast.copy_location(ast.Name(id=attr, ctx=node.ctx), node), f"attr:{attr}")
            if attr in self.attr_constants and isinstance(node.ctx, ast.Load):
                return _tag(ast.copy_location(_const(self.attr_constants[attr]), node), f"attr:{attr}")
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        # x.to(device) / x.to(self.accelerator.device): the candidate runs where its inputs are
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "to" and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Name) and node.args[0].id == _DEVICE):
            return self._note("device", "device moves (.to(self.accelerator.device)) dropped: the candidate runs "
                                        "where its inputs are", func.value)
        node.keywords = [k for k in node.keywords
                         if not (k.arg == "device" and isinstance(k.value, ast.Name) and k.value.id == _DEVICE)]
        return node


def _strip_annotations(fn: ast.FunctionDef) -> bool:
    had = fn.returns is not None
    fn.returns = None
    for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]:
        had = had or a.annotation is not None
        a.annotation = None

    class _Ann(ast.NodeTransformer):
        def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
            nonlocal had
            had = True
            if node.value is None:
                return None
            return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    _Ann().visit(fn)
    return had


def _is_cat_of_two(node: ast.AST, aliases: dict[str, str]) -> tuple[ast.expr, ast.expr] | None:
    if not (isinstance(node, ast.Call) and _dotted(node.func) in ("torch.cat", "torch.concat", "torch.concatenate")):
        return None
    if not node.args or not isinstance(node.args[0], (ast.Tuple, ast.List)) or len(node.args[0].elts) != 2:
        return None
    dim: ast.AST | None = node.args[1] if len(node.args) > 1 else None
    for k in node.keywords:
        if k.arg in ("dim", "axis"):
            dim = k.value
    if dim is not None and not (_is_const(dim) and dim.value in (0, -1)):
        return None
    a, b = node.args[0].elts
    return a, b


def _half_sum(a: ast.expr, b: ast.expr) -> ast.expr:
    return ast.BinOp(left=_const(0.5), op=ast.Mult(), right=ast.BinOp(left=a, op=ast.Add(), right=b))


def _rewrite_returns(fn: ast.FunctionDef, notes: dict[str, str]) -> None:
    returned: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Tuple) and node.value.elts:
                parts = ", ".join(_snippet(e, 30) for e in node.value.elts)
                notes.setdefault("tuple", f"returned the tuple ({parts}); only its first item, the losses, is kept")
                node.value = node.value.elts[0]
            pair = _is_cat_of_two(node.value, {})
            if pair is not None:
                node.value = _half_sum(*pair)
                notes.setdefault("cat", _CAT_NOTE)
            if isinstance(node.value, ast.Name):
                returned.add(node.value.id)
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in returned:
            pair = _is_cat_of_two(node.value, {})
            if pair is not None:
                node.value = _half_sum(*pair)
                notes.setdefault("cat", _CAT_NOTE)


_CAT_NOTE = ("returned torch.cat of a chosen and a rejected half (shape 2 * batch): averaged per pair as 0.5 * (A + B), "
             "shape (batch,); the batch mean, which training minimises, is unchanged")


def _drop_statements(fn: ast.FunctionDef, self_name: str | None, notes: dict[str, str]) -> None:
    """Imports in the body, trainer side effects (``self.x(...)`` as a statement), ``device = ...``."""

    def keep(stmt: ast.stmt) -> bool:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            notes.setdefault("imports", f"imports inside the body removed ({_snippet(stmt, 50)}): the candidate "
                                        "preamble imports math, torch and F")
            return False
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and self_name is not None:
            base = stmt.value.func
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id == self_name:
                notes.setdefault(f"effect:{_snippet(stmt.value.func)}",
                                 f"dropped {_snippet(stmt.value, 50)}: it only updates trainer state or logs")
                return False
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Name) and stmt.value.id == _DEVICE:
            return False
        return True

    def walk(body: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for stmt in body:
            if not keep(stmt):
                continue
            for attr in ("body", "orelse"):
                inner = getattr(stmt, attr, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    setattr(stmt, attr, walk(inner) or [ast.Pass()])
            out.append(stmt)
        return out

    fn.body = walk(fn.body) or [ast.Pass()]


def _remove_self_assignments(fn: ast.FunctionDef) -> None:
    """``x = x`` (what ``x = x.to(device)`` leaves) is removed."""

    def walk(body: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for stmt in body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and isinstance(stmt.value, ast.Name) and stmt.value.id == stmt.targets[0].id:
                continue
            for attr in ("body", "orelse"):
                inner = getattr(stmt, attr, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    setattr(stmt, attr, walk(inner) or [ast.Pass()])
            out.append(stmt)
        return out

    fn.body = walk(fn.body) or [ast.Pass()]


def _device_locals(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == _DEVICE:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _import_one(qualname: str, fn: ast.FunctionDef, in_class: bool, ctx: _ModuleContext, all_losses: list[str],
                settings: dict[str, Any], origin: str) -> ImportedLoss:
    fn = copy.deepcopy(fn)
    notes: dict[str, str] = {}  # changes that always apply, in order
    tagged: dict[str, str] = {}  # changes that apply if a node tagged with their key survives folding
    if fn.body and isinstance(fn.body[0], ast.Expr) and _is_const(fn.body[0].value) \
            and isinstance(fn.body[0].value.value, str):
        fn.body = fn.body[1:] or [ast.Pass()]  # the method's docstring describes the trainer method
    method = _is_method(fn, in_class)
    args = _positional(fn)
    self_name = args[0].arg if method else None
    params = args[1:] if method else args
    if method:
        notes["self"] = f"the trainer method's `{self_name}` dropped"
    if fn.args.vararg or fn.args.kwarg:
        raise _Refused(f"{qualname} takes *args/**kwargs; a candidate takes exactly the four log-probs and beta.")

    # Parameters: the four log-probs (either naming), beta, others with defaults.
    defaults = dict(zip([a.arg for a in args][len(args) - len(fn.args.defaults):], fn.args.defaults))
    defaults.update({a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None})
    renames: dict[str, str] = {}
    constants: dict[str, Any] = {}
    extra: list[str] = []
    for a in [*params, *fn.args.kwonlyargs]:
        if a.arg in CANDIDATE_PARAMETERS:
            continue
        if a.arg in TRL_NEW_NAMES:
            renames[a.arg] = TRL_NEW_NAMES[a.arg]
            continue
        if a.arg in settings:
            constants[a.arg] = settings[a.arg]
            extra.append(f"{a.arg} = {settings[a.arg]!r} (given)")
            continue
        if a.arg not in defaults:
            raise _Refused(f"{qualname}: the parameter `{a.arg}` has no default; lossforge passes only the four "
                           f"log-probs and beta. Give it a value with --set {a.arg}=VALUE.")
        try:
            constants[a.arg] = ast.literal_eval(defaults[a.arg])
        except (ValueError, SyntaxError, TypeError):
            raise _Refused(f"{qualname}: the default of `{a.arg}` ({_snippet(defaults[a.arg])}) is not a literal; "
                           f"give a value with --set {a.arg}=VALUE.") from None
        extra.append(f"{a.arg} = {constants[a.arg]!r} (its default)")
    if renames:
        notes["renames"] = "TRL's argument names renamed: " + ", ".join(f"{k} -> {v}" for k, v in renames.items())
    if extra:
        notes["extra"] = "extra parameters fixed: " + ", ".join(extra)
    clash = set(renames.values()) & _assigned_names(fn)
    if clash:
        raise _Refused(f"{qualname}: assigns {sorted(clash)}, the names its TRL-style arguments are renamed to.")

    # Trainer attributes: settings, then TRL's defaults; those assigned in the body become locals.
    attr_locals: set[str] = set()
    attrs_read: dict[str, None] = {}
    if self_name is not None:
        probe = _Rewrite(renames={}, ctx=ctx, self_name=self_name, constants={}, attr_constants={},
                         attr_locals=set(), local_names=set(), notes={})
        for node in ast.walk(fn):
            attr = probe._attr_of_self(node) if isinstance(node, ast.Attribute) else None
            if attr is None or attr == "beta":
                continue
            if isinstance(node.ctx, ast.Store):
                attr_locals.add(attr)
            else:
                attrs_read.setdefault(attr, None)
    attr_values: dict[str, Any] = {}
    for attr in attrs_read:
        if attr in settings:
            attr_values[attr] = settings[attr]
        elif attr in TRL_DEFAULTS:
            attr_values[attr] = TRL_DEFAULTS[attr]
    for k, v in attr_values.items():
        tagged[f"attr:{k}"] = f"self.{k} = {v!r}" + (" (given)" if k in settings else " (TRL DPOConfig default)")
    attr_constants = {k: v for k, v in attr_values.items() if k not in attr_locals}

    # Module-level literal constants the body reads; parameters fixed to a value that the body also
    # assigns become locals initialised with it.
    assigned = _assigned_names(fn)
    for name in sorted(set(constants) & assigned):
        fn.body.insert(0, ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=_const(constants.pop(name))))
    local_names = _assigned_names(fn) | {a.arg for a in params}
    used = _loads(fn)
    copied = [name for name in ctx.constants if name in used and name not in local_names]
    for name in reversed(copied):
        fn.body.insert(0, ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=copy.deepcopy(ctx.constants[name])))
    if copied:
        notes["constants"] = f"module-level constants copied into the body: {', '.join(copied)}"
    local_names |= set(copied)
    # Attributes assigned in the body: a local initialised with the value.
    for attr in sorted(attr_locals):
        if attr in attr_values:
            value = _tag(_const(attr_values[attr]), f"attr:{attr}")
            fn.body.insert(0, ast.Assign(targets=[ast.Name(id=attr, ctx=ast.Store())], value=value))
            local_names.add(attr)

    # Imports inside the body count as aliases too.
    body_ctx = _ModuleContext(dict(ctx.aliases), dict(ctx.foreign), ctx.constants, ctx.functions)
    for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _import_aliases(node, body_ctx.aliases, body_ctx.foreign)
    fn = _Rewrite(renames=renames, ctx=body_ctx, self_name=self_name, constants=constants,
                  attr_constants=attr_constants, attr_locals=attr_locals, local_names=local_names - set(constants),
                  notes=tagged).visit(fn)
    for dev in _device_locals(fn):
        fn = _Rewrite(renames={dev: _DEVICE}, ctx=_ModuleContext({}, {}, {}, set()), self_name=None, constants={},
                      attr_constants={}, attr_locals=set(), local_names=set(), notes=tagged).visit(fn)

    # Fold constant tests (notes of folded-away branches do not apply), then drop imports and trainer side
    # effects, keep the losses of a returned tuple, remove what nothing reads.
    fn = _Fold().visit(fn)
    decisions: set[str] = set()
    fn.body = _terminates(_fold_statements(fn.body, decisions))
    raised = next((stmt for stmt in fn.body if isinstance(stmt, ast.Raise)), None)
    if raised is not None:
        chosen = ", ".join(tagged[k].split(" (")[0] for k in sorted(decisions) if k.startswith("attr:")) or "the defaults"
        raise _Refused(f"{qualname} always raises with {chosen}: `{_snippet(raised, 110)}`. Pick a setting it "
                       "supports with --set NAME=VALUE.")
    _drop_statements(fn, self_name, notes)
    _remove_self_assignments(fn)
    _rewrite_returns(fn, notes)
    if _strip_annotations(fn):
        notes["annotations"] = "type annotations dropped"
    if fn.decorator_list:
        notes["decorators"] = "decorators dropped: " + ", ".join(f"@{_snippet(d, 30)}" for d in fn.decorator_list)
        fn.decorator_list = []
    removed = _remove_dead_stores(fn)
    if removed:
        notes["dead"] = "values nothing else reads removed: " + ", ".join(removed)

    # Whatever still needs the trainer or another module is refused, with the reason.
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id == _DEVICE:
            raise _Refused(f"{qualname} uses the trainer's device beyond moving tensors (`.to(device)`).")
        if self_name is not None and isinstance(node, ast.Call):
            target = _dotted(node.func) or ""
            if target.startswith(f"{self_name}."):
                method_name = target.split(".", 1)[1]
                others = [n.split(".")[-1] for n in all_losses if n.split(".")[-1] != fn.name]
                shown = ", ".join(others[:6]) + (f" and {len(others) - 6} more" if len(others) > 6 else "")
                listed = f" (the losses in this file: {shown})" if others else ""
                raise _Refused(
                    f"{qualname} calls the trainer's own method self.{method_name}(...): it dispatches to another "
                    f"loss or needs the trainer. Import the loss it computes instead{listed}.")
        if self_name is not None and isinstance(node, ast.Name) and node.id == self_name:
            raise _Refused(_self_reason(qualname, fn, self_name))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in body_ctx.foreign:
            raise _Refused(f"{qualname} uses `{node.id}` from {body_ctx.foreign[node.id]}; a candidate may use only "
                           "torch, torch.nn.functional (F) and math. Rewrite that part with torch.")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ctx.functions \
                and node.func.id not in local_names:
            raise _Refused(f"{qualname} calls `{node.func.id}(...)`, a helper defined in the file; a candidate is one "
                           "function: inline the helper into it.")

    # The candidate's signature and name.
    name = fn.name.lstrip("_") or "imported_loss"
    if name != fn.name:
        notes["name"] = f"renamed {fn.name} -> {name} (candidate names do not start with '_')"
    fn.name = name
    fn.args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in CANDIDATE_PARAMETERS], vararg=None,
                            kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    if method or [a.arg for a in params] != list(CANDIDATE_PARAMETERS):
        notes.setdefault("signature", "signature set to (" + ", ".join(CANDIDATE_PARAMETERS) + ")")
    ast.fix_missing_locations(fn)
    applied = _tags(fn) | decisions
    attrs = [text for key, text in tagged.items() if key.startswith("attr:") and key in applied]
    changes = list(notes.values())
    at = 1 if "self" in notes else 0
    if attrs:
        changes.insert(at, "trainer attributes replaced by their values: " + ", ".join(attrs))
    changes[at:at] = [text for key, text in tagged.items() if not key.startswith("attr:") and key in applied]
    docstring = _module_docstring(origin, qualname, changes)
    code = f'"""{docstring}"""\n{_PREAMBLE}\n\n{ast.unparse(fn)}\n'
    return ImportedLoss(name=name, qualname=qualname, origin=origin, code=code, changes=changes)


def _self_reason(qualname: str, fn: ast.FunctionDef, self_name: str) -> str:
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == self_name:
            attr = node.attr
            if attr == "args":
                continue
            return (f"{qualname} reads self.{attr}, which has no known default (not one of TRL's DPOConfig fields: "
                    f"{', '.join(sorted(TRL_DEFAULTS))}). Give its value with --set {attr}=VALUE.")
        if isinstance(node, ast.Attribute) and _dotted(node) and (_dotted(node) or "").startswith(f"{self_name}.args."):
            attr = node.attr
            return f"{qualname} reads self.args.{attr}, which has no known default. Give it with --set {attr}=VALUE."
    return f"{qualname} uses `{self_name}` itself (the trainer object), which a candidate does not have."


def _module_docstring(origin: str, qualname: str, changes: list[str]) -> str:
    lines = [f"{qualname}, imported by `lossforge import` from {origin}.", ""]
    if changes:
        lines.append("What the import changed:")
        lines.extend(f"- {c}" for c in changes)
    else:
        lines.append("Already in the candidate form; unchanged.")
    return "\n".join(line.replace('"""', "'''").replace("\\", "\\\\") for line in lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _parse(source: str, origin: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise ImportError_(f"{origin}: line {e.lineno}: {e.msg}; give a Python file with the loss function.") from None


def _is_candidate_form(tree: ast.Module) -> bool:
    fns = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    others = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.Import, ast.ImportFrom))
              and not (isinstance(s, ast.Expr) and _is_const(s.value))]
    return len(fns) == 1 and not others and [a.arg for a in fns[0].args.args] == list(CANDIDATE_PARAMETERS) \
        and not fns[0].args.vararg and not fns[0].args.kwarg and not fns[0].args.kwonlyargs


def import_losses(source: str, *, function: str | None = None, settings: dict[str, Any] | None = None,
                  origin: str = "<source>") -> ImportResult:
    """Every loss function in ``source`` (or only ``function``: a name or ``Class.method``), in the
    candidate form, and the functions refused with their reasons.

    ``settings`` gives values for trainer attributes and extra parameters (see ``parse_settings``).
    Raises ``ImportError_`` when the source does not parse, when it names no loss-like function, or when
    ``function`` is not in it (the message lists what is there).
    """
    settings = dict(settings or {})
    tree = _parse(source, origin)
    found = _functions(tree)
    if _is_candidate_form(tree) and function in (None, found[0][0]):
        qualname = found[0][0]
        return ImportResult(imported=[ImportedLoss(name=qualname, qualname=qualname, origin=origin, code=source,
                                                   changes=[])])
    if function is not None:
        chosen = [f for f in found if function in (f[0], f[0].split(".")[-1])]
        if not chosen:
            listed = ", ".join(q for q, _, _ in found) or "none"
            raise ImportError_(f"{origin} has no function {function!r}; its functions are: {listed}.")
        found = chosen
    ctx = _module_context(tree)
    losses = [(q, f, c) for q, f, c in found if len(_logps_names(f, c)) == 4]
    result = ImportResult()
    if not losses:
        on_model = [(q, f, c) for q, f, c in found if {"model", "inputs"} <= {a.arg for a in _positional(f)}
                    or f.name == "compute_loss"]
        if on_model or function is not None:
            result.refused = [(q, _not_a_loss_reason(q, f, c)) for q, f, c in (on_model or found)]
            return result
        listed = ", ".join(f"{q}({', '.join(a.arg for a in _positional(f))})" for q, f, _ in found) or "no functions"
        raise ImportError_(f"{origin} has no loss function to import: {listed}. A loss takes the four summed "
                           "log-probs (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
                           "reference_rejected_logps, or TRL's chosen_logps, rejected_logps, ref_chosen_logps, "
                           "ref_rejected_logps) and returns one loss per pair.")
    names = [q for q, _, _ in losses]
    for qualname, fn, in_class in losses:
        try:
            result.imported.append(_import_one(qualname, fn, in_class, ctx, names, settings, origin))
        except _Refused as refused:
            result.refused.append((qualname, refused.reason))
    return result


def import_file(path: Path | str, *, function: str | None = None, settings: dict[str, Any] | None = None) -> ImportResult:
    """``import_losses`` on the text of ``path``. Raises ``ImportError_`` if the file cannot be read."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as error:
        raise ImportError_(f"cannot read {path}: {error.strerror or error}") from None
    return import_losses(source, function=function, settings=settings, origin=str(path))


def import_hint(source: str) -> str | None:
    """For ``lossforge check``: a sentence pointing at ``lossforge import`` when ``source`` is not in the
    candidate form but holds losses that import (trainer methods, TRL-style names); else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if _is_candidate_form(tree):
        return None
    losses = [q for q, f, c in _functions(tree) if len(_logps_names(f, c)) == 4]
    if not losses:
        return None
    what = ", ".join(losses[:4]) + (f" and {len(losses) - 4} more" if len(losses) > 4 else "")
    return (f"this file holds loss code in another form ({what}): bring it into the candidate form with "
            "`lossforge import FILE -o OUT.py` (it says what it changes), then check OUT.py.")


def seed_candidates(paths: list[Path]) -> list[ImportedLoss]:
    """Every loss of each file in ``paths`` in the candidate form, in order (``[search] seed_losses``).
    Raises ``ImportError_`` naming the file and the reason when one cannot be read, has nothing to import,
    or has a loss that is refused."""
    seeds: list[ImportedLoss] = []
    for path in paths:
        result = import_file(path)
        if result.refused:
            qualname, why = result.refused[0]
            raise ImportError_(f"{path}: {why} (pick the loss functions into a file of their own, or check the file "
                               "with `lossforge import`)")
        if not result.imported:  # pragma: no cover - import_file raises when there is nothing to import
            raise ImportError_(f"{path}: no loss to import")
        seeds.extend(result.imported)
    return seeds


def seed_problems(paths: list[Path]) -> list[str]:
    """What is wrong with the seed files in ``paths`` (empty when every one imports), for the config check."""
    problems = []
    for path in paths:
        if not Path(path).is_file():
            problems.append(f"{path} is not a file (relative paths are relative to the working directory)")
            continue
        try:
            seed_candidates([Path(path)])
        except ImportError_ as error:
            problems.append(str(error))
    return problems
