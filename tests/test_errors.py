"""One root for lossforge's exceptions: every public exception class lossforge defines is a LossforgeError,
and each keeps its builtin base, so existing ``except ValueError`` / ``except RuntimeError`` still hold."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import lossforge
from lossforge.errors import CandidateError, LossforgeError, UsageError


def _public_exceptions() -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(lossforge.__path__, "lossforge."):
        if ".tests" in info.name or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra (ray, submitit, mcp...) that is not installed
            continue
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
                    and not name.startswith("_")):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_exception_is_a_lossforge_error() -> None:
    found = _public_exceptions()
    assert len(found) >= 20, sorted(found)
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, LossforgeError))
    assert strays == [], f"derive these from lossforge.errors.LossforgeError (or UsageError/CandidateError): {strays}"


def test_usage_errors_are_still_value_errors_and_the_candidate_s_are_marked() -> None:
    from lossforge.candidate.policy import PolicyViolation
    from lossforge.config import ConfigError
    from lossforge.llm.cost import BudgetExhausted
    from lossforge.trainer.job_config import DegenerateLossError

    assert issubclass(ConfigError, UsageError) and issubclass(ConfigError, ValueError)
    assert issubclass(PolicyViolation, CandidateError) and issubclass(DegenerateLossError, CandidateError)
    assert issubclass(DegenerateLossError, RuntimeError) and issubclass(BudgetExhausted, RuntimeError)
