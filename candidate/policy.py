"""The policy every candidate loss passes before any of its code runs, its static half: the AST
allow-list (``check_source``) and the exception every rule raises (``PolicyViolation``). The other half,
the RestrictedPython compile into a namespace that holds only ``torch``, ``F``, ``math`` and a few
builtins, is ``lossforge.candidate.namespace`` (``load_candidate`` runs both); the lists the rules read
are ``lossforge.candidate.allowlist``.

What this module guarantees
---------------------------
* ``check_source(code)`` returns the parsed module and its function node only for source that is exactly

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
from dataclasses import dataclass
from typing import Any, Callable

from lossforge.errors import CandidateError
from lossforge.candidate.allowlist import (
    _ALLOWED_IMPORTS,
    _ALLOWED_IMPORTS_TEXT,
    _TENSOR_MATH,
    FORBIDDEN_CALLS,
    FORBIDDEN_MODULE_NAMES,
    MAX_DEPTH,
    MAX_LITERAL_EXPONENT,
    MAX_LOOP_ITERATIONS,
    MAX_NESTED_ITERATIONS,
    MAX_NODES,
    PARAMETERS,
    PREBOUND,
    SAFE_BUILTINS,
    _is_forbidden_attribute,
)
from lossforge.candidate.astutil import (
    _assigned_names,
    _depth,
    _dotted,
    _int_literal,
    _iteration_bound,
    _line,
    _snippet,
)

__all__ = [
    "CANDIDATE_FILENAME",
    "LoadedCandidate",
    "PolicyViolation",
    "check_source",
]

#: The file name compiled candidates carry in tracebacks (the check suite uses it to find line numbers).
CANDIDATE_FILENAME = "<candidate>"


class PolicyViolation(CandidateError):
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
