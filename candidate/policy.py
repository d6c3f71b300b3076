"""The policy every candidate loss passes before any of its code runs: an AST allow-list, then a
RestrictedPython compile into a namespace that holds only ``torch``, ``F``, ``math`` and a few builtins.

What this module guarantees
---------------------------
* ``load_candidate(code)`` returns a ``LoadedCandidate(name, fn)`` only for source that is exactly

      [module docstring]
      [import math | import torch | import torch.nn.functional as F | from torch.nn import functional as F]
      def <name>(policy_chosen_logps, policy_rejected_logps,
                 reference_chosen_logps, reference_rejected_logps, beta):
          ...

  Anything else raises ``PolicyViolation(check, evidence, hint)``, whose ``evidence`` names the line and
  the construct and whose ``hint`` says what to do instead, in words an LLM can act on. The ``check``
  names: "parse", "size", "imports", "single_function", "signature", "forbidden_name",
  "forbidden_attribute", "forbidden_call", "forbidden_syntax", "loop", "restricted".
* Inside the function: no imports, no ``global``/``nonlocal``, no ``lambda``, nested ``def`` or
  ``class``, no ``with``/``try``/``yield``/``async``/``match``; no name (except a bare ``_``) or
  attribute that starts with ``_``; no ``exec``/``eval``/``open``/``getattr``/``type``/... (see ``FORBIDDEN_CALLS``); no attribute
  that leads out of tensor math (``torch.load``, ``torch.save``, ``torch.utils``, ``x.numpy``,
  ``x.register_hook``, ``torch.manual_seed``, ``torch.set_*``, ... see ``FORBIDDEN_ATTRIBUTES``); no
  assignment to attributes; no ``while``; ``for`` loops and comprehensions only over ``range(...)`` with
  literal int arguments or a literal tuple/list (or a local name bound to one, or ``zip``/``enumerate``
  of those), at most ``MAX_LOOP_ITERATIONS`` iterations each and ``MAX_NESTED_ITERATIONS`` nested; at
  run time every loop is also cut off after ``MAX_LOOP_ITERATIONS`` items; names used must be
  parameters, locals, ``torch``/``F``/``math`` or the safe builtins.
* The function is compiled with RestrictedPython's ``compile_restricted`` (which rewrites every ``a.b``
  into ``_getattr_(a, "b")``, ``a[k]`` into ``_getitem_``, ``a[k] = v`` into ``_write_``, loops into
  ``_getiter_``). The guarded ``_getattr_`` is the runtime backstop of the static checks: it refuses names
  starting with ``_``, the forbidden attribute names, ``str.format``, and any attribute whose value is a
  module other than torch, torch.nn, torch.nn.functional, torch.linalg, torch.special, torch.fft,
  torch.distributions and math (``F.importlib``, ``F.np``, ``torch.nn.modules`` ...). Builtins are only
  ``SAFE_BUILTINS``.

What it does not guarantee
--------------------------
* This is not a security boundary on its own: CPython cannot be sandboxed in-process. It rejects the
  obvious and the known escapes and gives good feedback; isolation (a separate process with resource
  limits, a scrubbed environment and a hard kill) is ``lossforge.sandbox.process``'s job.
* It does not bound run time or memory of tensor work (``torch.ones(10**5, 10**5)``); the process
  backend's limits do.
* ``x[i] = v`` on tensors is allowed (tensor indexing); in-place mutation of the inputs is detected by
  the check suite, not here.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import math
import operator
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from RestrictedPython import compile_restricted
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
)

__all__ = [
    "PARAMETERS",
    "SAFE_BUILTINS",
    "FORBIDDEN_CALLS",
    "FORBIDDEN_ATTRIBUTES",
    "MAX_LOOP_ITERATIONS",
    "CANDIDATE_FILENAME",
    "LoadedCandidate",
    "PolicyViolation",
    "load_candidate",
]

#: The exact positional parameters a candidate takes, in order.
PARAMETERS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "beta",
)

#: The file name compiled candidates carry in tracebacks (the check suite uses it to find line numbers).
CANDIDATE_FILENAME = "<candidate>"

#: Builtins a candidate may use.
SAFE_BUILTINS: dict[str, Any] = {
    "abs": abs,
    "min": min,
    "max": max,
    "float": float,
    "int": int,
    "range": range,
    "len": len,
    "sum": sum,
    "bool": bool,
    "round": round,
    "isinstance": isinstance,
    "tuple": tuple,
    "list": list,
    "zip": zip,
    "enumerate": enumerate,
    "True": True,
    "False": False,
    "None": None,
}

#: Module-level names pre-bound in the candidate's namespace.
PREBOUND = {"torch": torch, "F": F, "math": math}

#: Builtins and names whose use is refused, with the reason given to the proposer.
FORBIDDEN_CALLS = frozenset(
    {
        "exec", "eval", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "globals", "locals",
        "vars", "dir", "__import__", "breakpoint", "input", "help", "type", "object", "super", "print",
        "memoryview", "bytearray", "classmethod", "staticmethod", "property", "exit", "quit", "id", "iter",
        "next", "callable", "issubclass", "reload",
    }
)

#: Module names that must not appear anywhere, as a name or an attribute.
FORBIDDEN_MODULE_NAMES = frozenset(
    {
        "os", "sys", "subprocess", "builtins", "importlib", "np", "numpy", "ctypes", "inspect", "pickle",
        "shutil", "pathlib", "io", "gc", "socket", "signal", "resource", "threading", "multiprocessing",
        "warnings", "dataclasses", "marshal", "runpy", "code", "codecs", "tempfile", "glob",
    }
)

#: Attribute names refused on any object (torch's ways out of tensor math, file and hook APIs, global
#: state). ``set_*`` (``torch.set_grad_enabled``, ``x.set_``, ...) is refused by prefix.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        # torch namespaces outside tensor math
        "load", "save", "from_file", "hub", "ops", "utils", "cuda", "mps", "xpu", "distributed", "jit",
        "classes", "library", "backends", "multiprocessing", "compile", "autograd", "fx", "onnx", "export",
        "package", "profiler", "testing", "serialization", "overrides", "cpp_extension", "storage",
        "untyped_storage", "Storage", "UntypedStorage", "TypedStorage", "frombuffer", "from_numpy",
        "compiler", "_dynamo", "futures", "monitor",
        # tensor methods that call back into Python, touch memory sharing or the autograd engine
        "register_hook", "register_post_accumulate_grad_hook", "register_forward_hook",
        "register_forward_pre_hook", "register_full_backward_hook", "register_backward_hook",
        "apply_", "map_", "map2_", "share_memory_", "pin_memory", "numpy", "tofile", "backward",
        "retain_grad", "requires_grad_",
        # global state of the training process
        "manual_seed", "seed", "use_deterministic_algorithms", "no_grad", "enable_grad",
        "inference_mode", "autocast",
        # string formatting walks attributes (``"{0.__class__}".format(x)``)
        "format", "format_map",
        # object internals
        "mro", "gi_frame", "gi_code", "f_globals", "f_locals", "f_back", "co_code", "tb_frame",
    }
) | FORBIDDEN_MODULE_NAMES

#: Modules an attribute access may lead to at run time.
ALLOWED_MODULES = frozenset(
    {"torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.special", "torch.fft",
     "torch.distributions", "math"}
)

#: Most iterations one (nest of) for loop(s) may run.
MAX_LOOP_ITERATIONS = 100
#: Most iterations nested loops may run in total (the product of their bounds).
MAX_NESTED_ITERATIONS = 10_000
#: Most AST nodes, and the deepest AST nesting, a candidate may have.
MAX_NODES = 5_000
MAX_DEPTH = 100
#: Largest literal exponent in ``a ** b`` and shift in ``a << b``.
MAX_LITERAL_EXPONENT = 1_000

_TENSOR_MATH = "a loss may only do tensor math with torch, F and math"

# The allowed import statements: ("import", module, asname) / ("from", module, name, asname).
_ALLOWED_IMPORTS = {
    ("import", "math", None),
    ("import", "torch", None),
    ("import", "torch.nn.functional", "F"),
    ("from", "torch.nn", "functional", "F"),
}
_ALLOWED_IMPORTS_TEXT = (
    "`import math`, `import torch`, `import torch.nn.functional as F`, `from torch.nn import functional as F`"
)


class PolicyViolation(Exception):
    """A candidate broke the policy. ``check`` names the rule, ``evidence`` the line and construct,
    ``hint`` what to do instead."""

    def __init__(self, check: str, evidence: str, hint: str = "") -> None:
        super().__init__(check, evidence, hint)
        self.check = check
        self.evidence = evidence
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.check}] {self.evidence}"
        if self.hint:
            text += f" Hint: {self.hint}"
        return text

    def __reduce__(self):  # picklable across process boundaries
        return (PolicyViolation, (self.check, self.evidence, self.hint))


@dataclass(frozen=True)
class LoadedCandidate:
    """A candidate that passed the policy: its function name and the compiled, restricted function."""

    name: str
    fn: Callable[..., Any]


# --------------------------------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------------------------------


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


def _is_forbidden_attribute(name: str) -> bool:
    return name.startswith("_") or name in FORBIDDEN_ATTRIBUTES or name.startswith("set_")


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


class _BodyChecker(ast.NodeVisitor):
    """Walks the candidate function (signature, annotations, defaults and body) and raises on the first
    construct outside the policy."""

    _FORBIDDEN_SYNTAX = {
        ast.Lambda: ("`lambda` is not allowed", "write the expression inline"),
        ast.FunctionDef: ("a nested function definition is not allowed", "inline the helper into the one function"),
        ast.AsyncFunctionDef: ("`async def` is not allowed", "write one plain function"),
        ast.ClassDef: ("a class definition is not allowed", "a loss is one function of tensors"),
        ast.Global: ("`global` is not allowed", "use local variables only"),
        ast.Nonlocal: ("`nonlocal` is not allowed", "use local variables only"),
        ast.With: ("`with` is not allowed", "use `.detach()` instead of `with torch.no_grad():`"),
        ast.AsyncWith: ("`async with` is not allowed", "write plain tensor math"),
        ast.AsyncFor: ("`async for` is not allowed", "write plain tensor math"),
        ast.Await: ("`await` is not allowed", "write plain tensor math"),
        ast.Yield: ("`yield` is not allowed", "return the tensor of losses"),
        ast.YieldFrom: ("`yield from` is not allowed", "return the tensor of losses"),
        ast.Try: ("`try`/`except` is not allowed", "a loss must not hide errors; make the math safe instead"),
        ast.Match: ("`match` is not allowed", "use `torch.where` or `if`"),
    }
    if hasattr(ast, "TryStar"):
        _FORBIDDEN_SYNTAX[ast.TryStar] = _FORBIDDEN_SYNTAX[ast.Try]

    def __init__(self, fn: ast.FunctionDef) -> None:
        self.fn = fn
        # Parameters and names the function assigns: a local called `signal` or `id` is just a local.
        self.locals = _assigned_names(fn)
        self.known = self.locals | set(PREBOUND) | set(SAFE_BUILTINS)
        self.loop_product = 1
        # Local names currently bound to a literal tuple/list (or a bounded comprehension): loopable.
        self.bounded: dict[str, int] = {}

    def run(self) -> None:
        for dec in self.fn.decorator_list:
            raise PolicyViolation(
                "signature", f"{_line(dec)}: the decorator `@{_snippet(dec)}` is not allowed.",
                "remove decorators; define a plain function.",
            )
        args = self.fn.args
        for node in [*args.defaults, *(a.annotation for a in args.args if a.annotation), *(
                [self.fn.returns] if self.fn.returns else [])]:
            self.visit(node)
        for stmt in self.fn.body:
            self.visit(stmt)

    # -- statements and syntax ------------------------------------------------------------------
    def generic_visit(self, node: ast.AST) -> None:
        for kind, (what, hint) in self._FORBIDDEN_SYNTAX.items():
            if isinstance(node, kind):
                raise PolicyViolation("forbidden_syntax", f"{_line(node)}: {what} (`{_snippet(node)}`).", hint + ".")
        super().generic_visit(node)

    def visit_Import(self, node: ast.AST) -> None:
        raise PolicyViolation(
            "imports",
            f"{_line(node)}: `{_snippet(node)}` inside the function is not allowed; {_TENSOR_MATH}.",
            f"remove it; torch, F and math are already available (at the top you may write {_ALLOWED_IMPORTS_TEXT}).",
        )

    visit_ImportFrom = visit_Import

    def visit_While(self, node: ast.While) -> None:
        raise PolicyViolation(
            "loop",
            f"{_line(node)}: `while` loops are not allowed (`{_snippet(node)}`).",
            "use vectorised tensor operations over the batch; if you need a few fixed iterations, "
            f"use `for i in range(N):` with a literal N <= {MAX_LOOP_ITERATIONS}.",
        )

    def _forget_targets(self, target: ast.AST) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                self.bounded.pop(sub.id, None)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        for target in node.targets:
            self._forget_targets(target)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            bound = _iteration_bound(node.value, self.bounded)
            if bound is not None and not isinstance(node.value, ast.Name):
                self.bounded[node.targets[0].id] = bound

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        self._forget_targets(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.generic_visit(node)
        self._forget_targets(node.target)

    def _loop_over(self, node: ast.AST, iter_node: ast.AST) -> int:
        bound = _iteration_bound(iter_node, self.bounded)
        if bound is None or bound > MAX_LOOP_ITERATIONS:
            raise PolicyViolation(
                "loop",
                f"{_line(node)}: the loop over `{_snippet(iter_node)}` is not allowed; loops may only run over "
                f"`range(...)` with literal int arguments or over a literal tuple/list (or a local name bound to "
                f"one), at most {MAX_LOOP_ITERATIONS} iterations.",
                "use vectorised tensor operations over the batch instead of looping over tensors or "
                f"data-dependent ranges; for fixed repetitions write `range(N)` with a literal N <= {MAX_LOOP_ITERATIONS}.",
            )
        if self.loop_product * max(bound, 1) > MAX_NESTED_ITERATIONS:
            raise PolicyViolation(
                "loop",
                f"{_line(node)}: nested loops would run more than {MAX_NESTED_ITERATIONS} iterations in total.",
                "use vectorised tensor operations instead of nested loops.",
            )
        return max(bound, 1)

    def visit_For(self, node: ast.For) -> None:
        bound = self._loop_over(node, node.iter)
        self.visit(node.iter)
        self.visit(node.target)
        self._forget_targets(node.target)
        saved = self.loop_product
        self.loop_product *= bound
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)
        self.loop_product = saved

    def _visit_comprehension(self, node: ast.AST) -> None:
        saved = self.loop_product
        for gen in node.generators:  # type: ignore[attr-defined]
            if gen.is_async:
                raise PolicyViolation("forbidden_syntax", f"{_line(node)}: async comprehensions are not allowed.",
                                      "write plain tensor math.")
            self.loop_product *= self._loop_over(node, gen.iter)
            self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for field in ("elt", "key", "value"):
            if hasattr(node, field):
                self.visit(getattr(node, field))
        self.loop_product = saved

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _visit_comprehension

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._forget_targets(node.target)
        if isinstance(node.target, ast.Subscript):
            raise PolicyViolation(
                "forbidden_syntax",
                f"{_line(node)}: augmented assignment to an item (`{_snippet(node)}`) is not allowed.",
                "write `x = x + ...` on the whole tensor, or `x[i] = x[i] + v`, or better `torch.where(...)`.",
            )
        self.generic_visit(node)

    # -- names, attributes, calls ---------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name.startswith("_") and name != "_":  # a bare `_` is the usual throwaway local
            raise PolicyViolation(
                "forbidden_name",
                f"{_line(node)}: the name `{name}` is not allowed; names starting with `_` are reserved.",
                "rename the variable so it does not start with an underscore.",
            )
        if name in FORBIDDEN_MODULE_NAMES and name not in self.locals:
            raise PolicyViolation(
                "forbidden_name",
                f"{_line(node)}: `{name}` is not allowed; {_TENSOR_MATH}.",
                "use torch, F (torch.nn.functional) and math only.",
            )
        if name in FORBIDDEN_CALLS and name not in self.locals:
            raise PolicyViolation(
                "forbidden_name",
                f"{_line(node)}: `{name}` is not allowed; {_TENSOR_MATH}.",
                "remove it" + (" (debug output is not available)" if name == "print" else "") + ".",
            )
        if isinstance(node.ctx, ast.Load) and name not in self.known:
            if name == self.fn.name:
                raise PolicyViolation(
                    "loop",
                    f"{_line(node)}: the function refers to itself (`{name}`); recursion is not allowed.",
                    "write the loss without recursion, with vectorised tensor operations.",
                )
            raise PolicyViolation(
                "forbidden_name",
                f"{_line(node)}: the name `{name}` is not defined; only the parameters, local variables, torch, F, "
                "math and the builtins " + ", ".join(k for k in SAFE_BUILTINS if k[0].islower()) + " are available.",
                "define every constant inside the function body and use torch/F/math for the math.",
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_forbidden_attribute(node.attr):
            dotted = _dotted(node)
            if node.attr.startswith("_"):
                evidence = (f"{_line(node)}: `{dotted}` is not allowed; attributes starting with `_` "
                            f"(dunder access) are refused.")
            else:
                evidence = f"{_line(node)}: `{dotted}` is not allowed; {_TENSOR_MATH}."
            raise PolicyViolation(
                "forbidden_attribute", evidence,
                "use only tensor operations (torch.*, F.*, tensor methods like .mean(), .clamp(), .exp()); "
                "use .detach() to stop gradients; do not touch files, devices, hooks, seeds or global settings.",
            )
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            raise PolicyViolation(
                "forbidden_syntax",
                f"{_line(node)}: assigning to an attribute (`{_snippet(node)}`) is not allowed.",
                "assign to a local variable instead.",
            )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS and func.id not in self.locals:
            raise PolicyViolation(
                "forbidden_call",
                f"{_line(node)}: calling `{func.id}(...)` is not allowed; {_TENSOR_MATH}.",
                "remove the call" + (" (debug output is not available)." if func.id == "print" else
                                     "; reach tensor functions directly, e.g. `torch.sigmoid(x)`, `F.logsigmoid(x)`."),
            )
        if isinstance(func, ast.Name) and func.id == self.fn.name:
            raise PolicyViolation(
                "loop",
                f"{_line(node)}: the function calls itself (`{_snippet(node)}`); recursion is not allowed.",
                "write the loss without recursion, with vectorised tensor operations.",
            )
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, (ast.Pow, ast.LShift)):
            exponent = _int_literal(node.right)
            if isinstance(node.right, ast.Constant) and isinstance(node.right.value, (int, float)):
                exponent = node.right.value
            nested = isinstance(node.right, ast.BinOp) and isinstance(node.right.op, (ast.Pow, ast.LShift))
            if nested or (exponent is not None and abs(exponent) > MAX_LITERAL_EXPONENT):
                raise PolicyViolation(
                    "forbidden_syntax",
                    f"{_line(node)}: the constant power/shift `{_snippet(node)}` is too large.",
                    "use exponents of ordinary size; a loss works on log-probabilities, not huge integers.",
                )
        self.generic_visit(node)


def _check_top_level(tree: ast.Module) -> ast.FunctionDef:
    functions: list[ast.FunctionDef] = []
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
                stmt.value.value, str):
            continue  # module docstring
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _check_import(stmt)
            continue
        if isinstance(stmt, ast.FunctionDef):
            functions.append(stmt)
            continue
        if isinstance(stmt, ast.AsyncFunctionDef):
            raise PolicyViolation("single_function", f"{_line(stmt)}: `async def {stmt.name}` is not allowed.",
                                  "define one plain `def`.")
        raise PolicyViolation(
            "single_function",
            f"{_line(stmt)}: only imports and one function definition are allowed at the top level; found "
            f"`{_snippet(stmt)}`.",
            "put constants and helper computations inside the function body.",
        )
    if not functions:
        raise PolicyViolation(
            "single_function", "no function definition found.",
            "define exactly one function `def my_loss(" + ", ".join(PARAMETERS) + "):` that returns the losses.",
        )
    if len(functions) > 1:
        listed = ", ".join(f"`{f.name}` (line {f.lineno})" for f in functions)
        raise PolicyViolation(
            "single_function", f"found {len(functions)} top-level functions: {listed}; exactly one is allowed.",
            "inline the helpers into one function.",
        )
    return functions[0]


def _check_import(stmt: ast.Import | ast.ImportFrom) -> None:
    if isinstance(stmt, ast.Import):
        keys = [("import", a.name, a.asname) for a in stmt.names]
    else:
        keys = [("from", stmt.module if not stmt.level else "." * stmt.level + (stmt.module or ""), a.name, a.asname)
                for a in stmt.names]
    for key in keys:
        if key not in _ALLOWED_IMPORTS:
            raise PolicyViolation(
                "imports",
                f"{_line(stmt)}: `{_snippet(stmt)}` is not allowed; {_TENSOR_MATH}.",
                f"the only imports allowed are {_ALLOWED_IMPORTS_TEXT}.",
            )


def _check_signature(fn: ast.FunctionDef) -> None:
    args = fn.args
    names = tuple(a.arg for a in args.args)
    expected = "(" + ", ".join(PARAMETERS) + ")"
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or names != PARAMETERS:
        got = ast.unparse(args)
        raise PolicyViolation(
            "signature",
            f"line {fn.lineno}: `{fn.name}({got})` has the wrong parameters; expected exactly {expected}.",
            f"use exactly these five positional parameters, in this order: {expected}; no *args/**kwargs.",
        )
    for default in args.defaults:
        if not isinstance(default, ast.Constant):
            raise PolicyViolation(
                "signature", f"{_line(default)}: the default `{_snippet(default)}` is not a literal.",
                "drop the default values; all five arguments are always passed.",
            )
    if fn.name.startswith("_"):
        raise PolicyViolation(
            "forbidden_name", f"line {fn.lineno}: the function name `{fn.name}` starts with `_`.",
            "name the function without a leading underscore, e.g. `my_loss`.",
        )


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


def check_source(code: str, max_chars: int = 20_000) -> tuple[ast.Module, ast.FunctionDef]:
    """Run the static checks; return the parsed module and its function node, or raise
    ``PolicyViolation``."""
    if not isinstance(code, str):
        raise PolicyViolation("parse", f"the candidate is a {type(code).__name__}, not source text.",
                              "pass the Python source of the function as a string.")
    if len(code) > max_chars:
        raise PolicyViolation(
            "size", f"the code has {len(code)} characters; at most {max_chars} are allowed.",
            "a loss is a short function; remove dead code and long comments.",
        )
    try:
        tree = ast.parse(code, filename=CANDIDATE_FILENAME)
    except SyntaxError as e:
        text = f" (`{e.text.strip()}`)" if e.text and e.text.strip() else ""
        raise PolicyViolation("parse", f"line {e.lineno}: {e.msg}{text}.",
                              "return only valid Python source of one function, without markdown fences.") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise PolicyViolation("parse", f"the code could not be parsed: {type(e).__name__}: {e}.",
                              "return only valid Python source of one function.") from None
    count, depth = _depth(tree)
    if count > MAX_NODES or depth > MAX_DEPTH:
        raise PolicyViolation(
            "size", f"the code has {count} syntax nodes nested {depth} deep; at most {MAX_NODES} nodes and depth "
                    f"{MAX_DEPTH} are allowed.",
            "write a shorter, flatter function; split long expressions into named intermediate variables.",
        )
    fn = _check_top_level(tree)
    _check_signature(fn)
    _BodyChecker(fn).run()
    return tree, fn


# --------------------------------------------------------------------------------------------------
# Restricted namespace and compile
# --------------------------------------------------------------------------------------------------

_MISSING = object()


def _guarded_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """RestrictedPython's ``_getattr_``: refuse private names, forbidden attributes and modules outside
    tensor math; then RestrictedPython's own ``safer_getattr`` (str.format, frame attributes)."""
    if not isinstance(name, str) or _is_forbidden_attribute(name):
        raise PolicyViolation(
            "forbidden_attribute", f"attribute `{name}` is not allowed at run time; {_TENSOR_MATH}.",
            "use only tensor operations (torch.*, F.*, tensor methods).",
        )
    # RestrictedPython's safer_getattr returns its ``default`` (None unless given) for a missing
    # attribute: a misspelt ``F.logsigmod`` would surface later as "'NoneType' object is not callable".
    value = safer_getattr(obj, name, default)
    if value is _MISSING:
        raise AttributeError(missing_attribute_message(obj, name))
    if isinstance(value, types.ModuleType) and value.__name__ not in ALLOWED_MODULES:
        raise PolicyViolation(
            "forbidden_attribute", f"`{name}` leads to the module `{value.__name__}`; {_TENSOR_MATH}.",
            "use torch, F (torch.nn.functional), torch.linalg, torch.special and math only.",
        )
    return value


def missing_attribute_message(obj: Any, name: str) -> str:
    """What to tell the author of ``obj.name`` when ``obj`` has no attribute ``name``, with the closest
    public names of ``obj`` (``difflib``), e.g. "torch.nn.functional has no attribute 'logsigmod' (did
    you mean 'logsigmoid'?)"."""
    if isinstance(obj, types.ModuleType):
        owner = obj.__name__
    elif isinstance(obj, type):
        owner = f"the class {obj.__name__}"
    else:
        owner = f"a {type(obj).__name__} object"
    public = [n for n in dir(obj) if not _is_forbidden_attribute(n)]
    close = difflib.get_close_matches(name, public, n=3, cutoff=0.75)
    text = f"{owner} has no attribute {name!r}"
    if close:
        text += " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return text


def _guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def _guarded_write(obj: Any) -> Any:
    # Item assignment on tensors/lists (``x[mask] = 0``); attribute assignment is refused statically.
    if isinstance(obj, types.ModuleType):
        raise PolicyViolation("forbidden_syntax", "writing into a module is not allowed.", "assign to local variables.")
    return obj


_INPLACE_OPS = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "@=": operator.imatmul,
    "<<=": operator.ilshift, ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor,
    "&=": operator.iand,
}


def _guarded_iter(obj: Any) -> Iterator[Any]:
    """RestrictedPython's ``_getiter_``: every loop and comprehension stops with a ``PolicyViolation``
    after ``MAX_LOOP_ITERATIONS`` items (the runtime backstop of the static loop rule, e.g. against a list
    that grows while it is iterated)."""
    for count, item in enumerate(obj):
        if count >= MAX_LOOP_ITERATIONS:
            raise PolicyViolation(
                "loop", f"a loop ran more than {MAX_LOOP_ITERATIONS} iterations.",
                "use vectorised tensor operations instead of Python loops.",
            )
        yield item


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    return _INPLACE_OPS[op](x, y)


def _apply(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return f(*args, **kwargs)


#: Packages torch's own C++ code may import lazily while a candidate's frame is the current one.
_INTERNAL_IMPORT_ROOTS = frozenset({"torch", "numpy", "math", "typing", "functools", "collections", "warnings"})


def _internal_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    """`__import__` for C code only (PyImport_Import reads the *current frame's* builtins).

    torch's C++ functions import helper modules on first use (e.g. `torch.clamp` with a keyword); when
    that first use happens inside candidate code, CPython looks `__import__` up in the candidate's
    builtins. Candidate source can never name it (the policy refuses every underscore name), so this
    only serves torch's internals, and only for torch and a few standard modules.
    """
    if level != 0 or name.split(".")[0] not in _INTERNAL_IMPORT_ROOTS:
        raise ImportError(f"import of {name!r} is not allowed in candidate code")
    return builtins.__import__(name, globals, locals, fromlist, level)


def restricted_namespace() -> dict[str, Any]:
    """A fresh global namespace for one candidate: torch, F, math, the safe builtins and the guards."""
    return {
        "__builtins__": {**SAFE_BUILTINS, "__import__": _internal_import},
        "__name__": "lossforge_candidate",
        "_getattr_": _guarded_getattr,
        "_getitem_": _guarded_getitem,
        "_write_": _guarded_write,
        "_getiter_": _guarded_iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": _inplacevar,
        "_apply_": _apply,
        **PREBOUND,
    }


def load_candidate(code: str, max_chars: int = 20_000) -> LoadedCandidate:
    """Check ``code`` against the policy and compile its function into a restricted namespace.

    Raises ``PolicyViolation`` (with ``check``, ``evidence``, ``hint``) when the code breaks the policy.
    """
    _tree, fn_node = check_source(code, max_chars=max_chars)
    # Compile only the function: the allowed imports are pre-bound names, and the docstring is dropped.
    module = ast.Module(body=[fn_node], type_ignores=[])
    try:
        byte_code = compile_restricted(module, filename=CANDIDATE_FILENAME, mode="exec")
    except SyntaxError as e:  # RestrictedPython lists what its transformer refused
        raise PolicyViolation(
            "restricted", f"RestrictedPython refused the code: {e}",
            "write plain tensor math: local variables, torch/F/math calls, tensor methods and indexing.",
        ) from None
    namespace = restricted_namespace()
    exec(byte_code, namespace)  # defines the function (evaluates only literal defaults and annotations)
    fn = namespace.get(fn_node.name)
    if not callable(fn):  # pragma: no cover - the AST check guarantees a def
        raise PolicyViolation("single_function", f"`{fn_node.name}` is not a function.", "define one function.")
    return LoadedCandidate(name=fn_node.name, fn=fn)
