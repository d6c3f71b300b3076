"""The root of lossforge's exceptions, so that a caller can catch everything lossforge raises on purpose.

* ``LossforgeError``: every exception class lossforge defines derives from it (tests/test_errors.py
  checks the public ones). A class keeps its builtin base as well (``ConfigError`` is still a
  ``ValueError``), so existing ``except ValueError`` sites behave as before.
* ``UsageError``: bad input from the user (a file, a setting, an option); the message says what was
  wrong and what to do. The CLI prints it without a traceback.
* ``CandidateError``: the candidate loss's own fault (it broke the policy, it trained to a degenerate
  model); elsewhere in the search such a failure is a value, not an exception.

Imports nothing: it sits below every other layer.
"""
from __future__ import annotations

__all__ = ["CandidateError", "LossforgeError", "UsageError"]


class LossforgeError(Exception):
    """Anything lossforge raises on purpose."""


class UsageError(LossforgeError, ValueError):
    """Bad input: the message says what was wrong and what to do."""


class CandidateError(LossforgeError):
    """The candidate loss's fault (a policy violation, a degenerate training run)."""
