"""The data of the candidate policy: the candidate's parameters, the builtins and modules it may use, the
names, attributes, modules and import statements it may not, and the limits on loops and size.

What this module guarantees
---------------------------
* Data only (and ``_is_forbidden_attribute``, the one rule over ``FORBIDDEN_ATTRIBUTES``): nothing here
  parses or runs candidate code. The static checks that read it are ``lossforge.candidate.policy``; the
  runtime guards and the restricted namespace are ``lossforge.candidate.namespace``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "PARAMETERS",
    "SAFE_BUILTINS",
    "FORBIDDEN_CALLS",
    "FORBIDDEN_ATTRIBUTES",
    "MAX_LOOP_ITERATIONS",
]

#: The exact positional parameters a candidate takes, in order.
PARAMETERS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "beta",
)

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


def _is_forbidden_attribute(name: str) -> bool:
    return name.startswith("_") or name in FORBIDDEN_ATTRIBUTES or name.startswith("set_")
