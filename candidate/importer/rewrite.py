"""Transforming one loss function into the candidate form (``_import_one``): the signature, ``self`` and
trainer attributes, aliases, device moves, returned tuples and concatenations, dropped statements; every
change is recorded in words.

What this module guarantees
---------------------------
* Works on a copy of the function node; the result is complete candidate source with the fixed preamble
  and a module docstring listing the changes. A loss that still needs the trainer raises ``_Refused`` with
  the reason.
"""
from __future__ import annotations

import ast
import copy
from typing import Any

from lossforge.candidate.importer.base import (
    CANDIDATE_PARAMETERS,
    _DEVICE,
    ImportedLoss,
    _PREAMBLE,
    _Refused,
    _TRL_CONSTANTS,
    TRL_DEFAULTS,
    TRL_NEW_NAMES,
)
from lossforge.candidate.importer.astutil import (
    _assigned_names,
    _const,
    _dotted,
    _Fold,
    _fold_statements,
    _is_const,
    _loads,
    _remove_dead_stores,
    _snippet,
    _tag,
    _tags,
    _terminates,
)
from lossforge.candidate.importer.discover import _import_aliases, _is_method, _ModuleContext, _positional


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
