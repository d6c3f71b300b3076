"""What LLM calls cost, and a budget that stops spending.

``PriceTable`` maps a model to US dollars per million input and output tokens; ``cost(usage)`` prices
one call. ``Budget(limits, prices)`` accumulates calls with ``charge(usage)`` and says why it is spent
with ``exhausted() -> str | None``; ``check()`` raises ``BudgetExhausted`` with that reason.

What it guarantees
------------------
* A model is priced by its exact name, else by the longest configured prefix of its name (so
  ``gpt-4o`` prices ``gpt-4o-2024-08-06``), else by ``default``. A model with no price at all is an
  error (``PriceError``) when a dollar limit is set, so a misspelt model name cannot spend unmetered;
  without a dollar limit it costs 0 and is still counted in tokens and calls.
* The rule for callers: call ``check()`` before a call and ``charge()`` after it. A call is only started
  while no limit is reached, so the overshoot is at most the calls in flight when the limit is reached:
  one call for one caller, at most K for K callers at once (``[search] concurrency``; bound each call
  with ``max_tokens``).
* The state (``BudgetState``) is a pydantic model: ``budget.state.model_dump()`` is JSON, and
  ``Budget(limits, prices, state=BudgetState.model_validate(saved))`` resumes it exactly, e.g. from the
  archive's meta table. ``charge`` is thread-safe (the judge and concurrent candidates charge from
  worker threads).
* ``on_change`` (if set) is called with a copy of the new state after each charge, on the charging
  thread, *inside* the budget's lock: the states reach it one at a time and in the order of the charges,
  so the last state it was given (the one a caller persists) is always the budget's current state,
  never an older one written after a newer one. ``on_change`` may read the budget (the lock is
  re-entrant) but must not wait for another thread that charges it; when it raises, the charge is kept
  and the error propagates to the charging caller.
"""
from __future__ import annotations

import threading
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from lossforge.errors import LossforgeError
from lossforge.llm.client import Usage
from lossforge.settings.llm import BudgetLimits, PriceTable

__all__ = ["Budget", "BudgetExhausted", "BudgetState", "ModelSpend"]


class BudgetExhausted(LossforgeError, RuntimeError):
    """A budget limit is reached; the message says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"LLM budget exhausted: {reason}")
        self.reason = reason


class ModelSpend(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0


class BudgetState(BaseModel):
    """What has been spent so far (JSON-serialisable; persist it to resume the budget)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    estimated_calls: int = 0  # calls whose usage the server did not report
    by_model: dict[str, ModelSpend] = Field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget:
    """Accumulates spending against limits (see the module docstring)."""

    def __init__(
        self,
        limits: BudgetLimits | None = None,
        prices: PriceTable | None = None,
        state: BudgetState | None = None,
        on_change: Callable[[BudgetState], None] | None = None,
    ) -> None:
        self.limits = limits or BudgetLimits()
        self.prices = prices or PriceTable()
        self._state = state.model_copy(deep=True) if state is not None else BudgetState()
        self.on_change = on_change
        self._lock = threading.RLock()  # re-entrant: on_change runs under it and may read the state

    @property
    def state(self) -> BudgetState:
        """A copy of the spending so far."""
        with self._lock:
            return self._state.model_copy(deep=True)

    def cost(self, usage: Usage) -> float:
        return self.prices.cost(usage, strict=self.limits.max_usd is not None)

    def charge(self, usage: Usage) -> float:
        """Add one call's usage; returns its cost in USD."""
        usd = self.cost(usage)
        with self._lock:
            s = self._state
            s.calls += 1
            s.prompt_tokens += usage.prompt_tokens
            s.completion_tokens += usage.completion_tokens
            s.usd += usd
            s.estimated_calls += int(usage.estimated)
            spend = s.by_model.setdefault(usage.model, ModelSpend())
            spend.calls += 1
            spend.prompt_tokens += usage.prompt_tokens
            spend.completion_tokens += usage.completion_tokens
            spend.usd += usd
            if self.on_change is not None:  # under the lock: persisted in the order of the charges
                self.on_change(s.model_copy(deep=True))
        return usd

    def exhausted(self) -> str | None:
        """Why no further call may start, or None while every limit leaves room."""
        limits = self.limits
        with self._lock:
            s = self._state
            if limits.max_calls is not None and s.calls >= limits.max_calls:
                return f"{s.calls} calls made, limit {limits.max_calls}"
            if limits.max_tokens is not None and s.tokens >= limits.max_tokens:
                return f"{s.tokens} tokens used, limit {limits.max_tokens}"
            if limits.max_usd is not None and s.usd >= limits.max_usd:
                return f"${s.usd:.4f} spent, limit ${limits.max_usd:.4f}"
        return None

    def check(self) -> None:
        """Raise ``BudgetExhausted`` if a limit is reached."""
        reason = self.exhausted()
        if reason is not None:
            raise BudgetExhausted(reason)

    def summary(self) -> dict[str, object]:
        """Spending and limits as one JSON-ready dict (for events and reports)."""
        s = self.state
        return {
            "calls": s.calls,
            "tokens": s.tokens,
            "usd": round(s.usd, 6),
            "max_calls": self.limits.max_calls,
            "max_tokens": self.limits.max_tokens,
            "max_usd": self.limits.max_usd,
            "exhausted": self.exhausted(),
        }
