"""Cancellation of the sandbox calls one thread makes (e.g. a tool call its client cancelled).

``with cancellable(c):`` makes every ``ProcessSandbox`` call the thread makes inside the block obey ``c``:
``c.cancel()`` (from any thread) kills the children of those calls that are running, as at a timeout,
and every later call under ``c`` raises ``SandboxError(kind="error")`` at once.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from lossforge.sandbox.protocol import SandboxError

if TYPE_CHECKING:
    from lossforge.sandbox.worker import _Server

__all__ = ["Cancellation", "cancellable"]

_CURRENT = threading.local()


class Cancellation:
    """A switch for the sandbox calls made under ``cancellable(self)``: ``cancel()`` kills the children
    of those calls that are running (their whole process groups, as at a timeout) and makes every later
    call under it raise ``SandboxError(kind="error")`` at once, so the slot it held is free within
    moments. Thread-safe; ``cancel()`` may be called from any thread, more than once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._jobs: set[tuple["_Server", int]] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            jobs = list(self._jobs)
        for server, job_id in jobs:
            server.kill(job_id)

    def _add(self, server: "_Server", job_id: int) -> bool:
        """Track a submitted job; False when already cancelled (the caller kills it)."""
        with self._lock:
            if self._cancelled:
                return False
            self._jobs.add((server, job_id))
            return True

    def _discard(self, server: "_Server", job_id: int) -> None:
        with self._lock:
            self._jobs.discard((server, job_id))


class cancellable:  # noqa: N801 - used as a context manager, like contextlib's
    """``with cancellable(cancellation): ...``: sandbox calls this thread makes inside the block (any
    ``ProcessSandbox``) obey ``cancellation``. Nested blocks restore the outer one on exit."""

    def __init__(self, cancellation: Cancellation) -> None:
        self.cancellation = cancellation
        self._outer: Cancellation | None = None

    def __enter__(self) -> Cancellation:
        self._outer = getattr(_CURRENT, "cancellation", None)
        _CURRENT.cancellation = self.cancellation
        return self.cancellation

    def __exit__(self, *exc: object) -> None:
        _CURRENT.cancellation = self._outer


def _refuse_if_cancelled(cancellation: Cancellation | None) -> None:
    if cancellation is not None and cancellation.cancelled:
        raise SandboxError("error", "the call was cancelled: its sandbox jobs were killed")
