"""The Sandbox seam: how the rest of lossforge checks and runs untrusted candidate losses.

What this module guarantees
---------------------------
* ``Sandbox`` is the protocol every backend implements:

  - ``check(code, beta=0.1) -> CheckReport``: the unit-check suite (``lossforge.candidate.checks``) on
    ``code``. Never raises for a bad candidate: a policy violation, a failed check, a timeout
    (check "timeout") and a crash (check "crashed") are all reports.
  - ``run(code, task, *args, timeout) -> T``: loads ``code`` under the policy and calls
    ``task(loss_fn, *args)`` in isolation; ``task`` must be a module-level (picklable) function, and its
    result must be picklable. Failures raise ``SandboxError`` with ``kind`` "policy", "timeout",
    "crashed" or "error".
  - ``close()``: releases the backend's resources; calling it twice is fine.
* ``InProcessSandbox`` is the test double: same interface, no isolation, no timeout.

What it does not guarantee
--------------------------
* Which isolation a backend gives (see each backend's docstring).
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

from lossforge.errors import LossforgeError
from lossforge.candidate.report import CheckReport

__all__ = ["Sandbox", "SandboxError", "SANDBOX_ERROR_KINDS", "InProcessSandbox"]

T = TypeVar("T")

SANDBOX_ERROR_KINDS = ("timeout", "crashed", "policy", "error")


class SandboxError(LossforgeError):
    """``run`` failed. ``kind``: "timeout" (killed at the deadline), "crashed" (the isolated process died:
    signal, exit, out of memory), "policy" (the code broke the candidate policy) or "error" (the task
    raised; ``message`` is ``Type: message``). ``traceback_tail`` is the last lines of the traceback."""

    def __init__(self, kind: str, message: str, traceback_tail: str = "") -> None:
        super().__init__(kind, message, traceback_tail)
        self.kind = kind
        self.message = message
        self.traceback_tail = traceback_tail

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __reduce__(self):  # picklable across process boundaries
        return (SandboxError, (self.kind, self.message, self.traceback_tail))


def traceback_tail(exc: BaseException, lines: int = 12) -> str:
    """The last ``lines`` lines of ``exc``'s formatted traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.rstrip().splitlines()[-lines:])


@runtime_checkable
class Sandbox(Protocol):
    """Checks and runs candidate losses in isolation."""

    def check(self, code: str, beta: float = 0.1) -> CheckReport:
        """Run the check suite on ``code``; never raises for a bad candidate."""
        ...

    def run(self, code: str, task: Callable[..., T], *args: Any, timeout: float) -> T:
        """Call ``task(loss_fn, *args)`` in isolation with ``code``'s compiled function; return its result
        or raise ``SandboxError``."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...


class InProcessSandbox:
    """The test double: runs the checks and tasks in this process. No isolation and no timeout (the
    ``timeout`` argument is accepted and ignored); use it in tests of code that needs *a* sandbox."""

    def __init__(self) -> None:
        self.closed = False

    def check(self, code: str, beta: float = 0.1) -> CheckReport:
        from lossforge.candidate.checks import run_checks

        return run_checks(code, beta)

    def run(self, code: str, task: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        from lossforge.candidate.namespace import load_candidate
        from lossforge.candidate.policy import PolicyViolation

        try:
            loaded = load_candidate(code)
        except PolicyViolation as v:
            raise SandboxError("policy", str(v)) from None
        try:
            return task(loaded.fn, *args)
        except Exception as exc:  # noqa: BLE001
            raise SandboxError("error", f"{type(exc).__name__}: {exc}", traceback_tail(exc)) from exc

    def close(self) -> None:
        self.closed = True
