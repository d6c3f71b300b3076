"""Prices and budgets: exact costs, each limit, resuming from a saved state, thread safety."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from lossforge.llm.client import Usage
from lossforge.llm.cost import Budget, BudgetExhausted, BudgetState
from lossforge.settings.llm import BudgetLimits, Price, PriceError, PriceTable

PRICES = PriceTable(models={"gpt-4o": Price(input=2.5, output=10.0), "gpt-4o-mini": Price(input=0.15, output=0.6)})


def test_prices_by_exact_name_then_longest_prefix_then_default() -> None:
    assert PRICES.cost(Usage(model="gpt-4o", prompt_tokens=1_000_000, completion_tokens=0)) == 2.5
    assert PRICES.cost(Usage(model="gpt-4o-mini-2024-07-18", prompt_tokens=0, completion_tokens=1_000_000)) == 0.6
    assert PRICES.cost(Usage(model="gpt-4o-2024-08-06", prompt_tokens=2000, completion_tokens=500)) == pytest.approx(0.01)
    assert PRICES.cost(Usage(model="llama", prompt_tokens=10)) == 0.0
    with pytest.raises(PriceError, match="llama"):
        PRICES.cost(Usage(model="llama", prompt_tokens=10), strict=True)
    with_default = PriceTable(default=Price(input=1.0, output=1.0))
    assert with_default.cost(Usage(model="llama", prompt_tokens=500_000, completion_tokens=500_000)) == 1.0


def test_each_limit_stops_at_the_call_that_reaches_it() -> None:
    calls = Budget(BudgetLimits(max_calls=2))
    calls.charge(Usage(model="m"))
    assert calls.exhausted() is None
    calls.charge(Usage(model="m"))
    assert "2 calls" in calls.exhausted()
    with pytest.raises(BudgetExhausted, match="2 calls"):
        calls.check()

    tokens = Budget(BudgetLimits(max_tokens=100))
    tokens.charge(Usage(model="m", prompt_tokens=60, completion_tokens=39))
    assert tokens.exhausted() is None
    tokens.charge(Usage(model="m", prompt_tokens=1))
    assert "100 tokens" in tokens.exhausted()

    usd = Budget(BudgetLimits(max_usd=0.02), PRICES)
    assert usd.charge(Usage(model="gpt-4o", prompt_tokens=4000, completion_tokens=0)) == pytest.approx(0.01)
    assert usd.exhausted() is None
    usd.charge(Usage(model="gpt-4o", prompt_tokens=4000))
    assert "$0.0200 spent" in usd.exhausted()


def test_a_dollar_limit_refuses_models_without_a_price() -> None:
    with pytest.raises(PriceError):
        Budget(BudgetLimits(max_usd=1.0), PRICES).charge(Usage(model="typo-model", prompt_tokens=1))
    Budget(BudgetLimits(max_calls=3), PRICES).charge(Usage(model="typo-model", prompt_tokens=1))  # counted, free


def test_state_round_trips_through_json_and_resumes() -> None:
    saved: list[dict] = []
    budget = Budget(BudgetLimits(max_calls=3), PRICES, on_change=lambda s: saved.append(s.model_dump()))
    budget.charge(Usage(model="gpt-4o", prompt_tokens=100, completion_tokens=20))
    budget.charge(Usage(model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5, estimated=True))
    stored = json.loads(json.dumps(saved[-1]))
    resumed = Budget(BudgetLimits(max_calls=3), PRICES, state=BudgetState.model_validate(stored))
    assert resumed.state == budget.state
    assert resumed.state.by_model["gpt-4o"].prompt_tokens == 100 and resumed.state.estimated_calls == 1
    assert resumed.exhausted() is None
    resumed.charge(Usage(model="gpt-4o"))
    assert resumed.exhausted() is not None and budget.exhausted() is None


def test_charging_from_many_threads_loses_nothing() -> None:
    budget = Budget(prices=PRICES)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: budget.charge(Usage(model="gpt-4o", prompt_tokens=1000, completion_tokens=100)), range(400)))
    state = budget.state
    assert (state.calls, state.prompt_tokens, state.completion_tokens) == (400, 400_000, 40_000)
    assert state.usd == pytest.approx(400 * (1000 * 2.5 + 100 * 10.0) / 1e6)
    assert budget.summary()["calls"] == 400


def test_the_last_state_persisted_from_many_threads_is_the_final_one(tmp_path) -> None:
    """Concurrent candidates charge one budget; what `on_change` persists (the archive's meta, as the run
    does) must end at the final state, never at an older snapshot written after a newer one."""
    import random
    import time

    from lossforge.rundir.archive import Archive

    archive = Archive(tmp_path / "archive.sqlite")
    seen: list[int] = []
    jitter = random.Random(0)

    def persist(state: BudgetState) -> None:
        time.sleep(jitter.random() * 0.002)  # a slow write widens the window between charge and persist
        archive.set_meta("llm_budget", state.model_dump())
        seen.append(state.calls)

    budget = Budget(BudgetLimits(max_calls=10_000), PRICES, on_change=persist)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: budget.charge(Usage(model="gpt-4o", prompt_tokens=10 + i % 7, completion_tokens=3)),
                      range(300)))
    final = budget.state
    assert final.calls == 300 and seen == list(range(1, 301))  # every state persisted once, in charge order
    assert BudgetState.model_validate(archive.get_meta("llm_budget")) == final
    resumed = Budget(BudgetLimits(max_calls=10_000), PRICES, state=BudgetState.model_validate(archive.get_meta("llm_budget")))
    assert resumed.state == final
    archive.close()


def test_on_change_may_read_the_budget_it_is_called_from() -> None:
    budget = Budget(BudgetLimits(max_calls=2))
    read: list[tuple[int, str | None]] = []
    budget.on_change = lambda state: read.append((budget.state.calls, budget.exhausted()))
    budget.charge(Usage(model="m"))
    budget.charge(Usage(model="m"))
    assert read == [(1, None), (2, "2 calls made, limit 2")]
