"""The policy every candidate loss passes before any of its code runs, its runtime half: ``load_candidate``
runs the static checks (``lossforge.candidate.policy.check_source``), then compiles the function with
RestrictedPython into a namespace that holds only ``torch``, ``F``, ``math`` and a few builtins, with
guarded attribute, item and loop access.

What this module guarantees
---------------------------
* ``load_candidate(code)`` returns a ``LoadedCandidate(name, fn)`` only for source ``check_source``
  accepts; anything else raises ``PolicyViolation(check, evidence, hint)`` (``check`` "restricted" when
  RestrictedPython's own transformer refuses the code).
* The function is compiled with RestrictedPython's ``compile_restricted`` (which rewrites every ``a.b``
  into ``_getattr_(a, "b")``, ``a[k]`` into ``_getitem_``, ``a[k] = v`` into ``_write_``, loops into
  ``_getiter_``). The guarded ``_getattr_`` is the runtime backstop of the static checks: it refuses names
  starting with ``_``, the forbidden attribute names, ``str.format``, and any attribute whose value is a
  module other than torch, torch.nn, torch.nn.functional, torch.linalg, torch.special, torch.fft,
  torch.distributions and math (``F.importlib``, ``F.np``, ``torch.nn.modules`` ...). Builtins are only
  ``SAFE_BUILTINS``.

What it does not guarantee: the same as ``lossforge.candidate.policy`` (not a security boundary on its
own; no bound on tensor work; the process backend provides both).
"""
from __future__ import annotations

import ast
import builtins
import difflib
import operator
import types
from typing import Any, Callable, Iterator

from RestrictedPython import compile_restricted
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
)

from lossforge.candidate.allowlist import (
    _TENSOR_MATH,
    ALLOWED_MODULES,
    MAX_LOOP_ITERATIONS,
    PREBOUND,
    SAFE_BUILTINS,
    _is_forbidden_attribute,
)
from lossforge.candidate.policy import CANDIDATE_FILENAME, LoadedCandidate, PolicyViolation, check_source

__all__ = ["load_candidate", "restricted_namespace"]

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
