"""Reading the source module around a loss: its import aliases, foreign modules, literal constants and
functions (``_ModuleContext``), and finding the functions that are losses (they take the four log-probs,
in the candidate's or TRL's newer names).

What this module guarantees
---------------------------
* Reads the parsed module only; it changes nothing and never runs code. A function that is not a loss
  gets a reason in words (``_not_a_loss_reason``).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from lossforge.candidate.importer.base import CANDIDATE_PARAMETERS, _MODULES, TRL_NEW_NAMES
from lossforge.candidate.importer.astutil import _dotted


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
