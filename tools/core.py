"""The one code path that checks and screens a candidate, used by the tool API and by the search's nodes.

`check_candidate(sandbox, code, beta)` runs the unit-check suite in the sandbox and returns its
`CheckReport`; `screen_candidate(sandbox, code, world, screen, seed, cache_dir, timeout)` runs one
proxy screen in the sandbox and classifies it; `screen_for_fitness` reads the search's fitness
(``[proxy.fitness]``: the screen and its variants, aggregated) through `screen_candidate`.
`tools.api.check_loss` / `screen_loss` and `agent.nodes.SearchNodes.check` / `screen` call exactly these
functions, so an agent using the tools and the search itself see the same checks, the same fitness and
the same failure classification.

What it guarantees
------------------
* Candidate code only runs in the given sandbox (`check` / `run`); nothing here executes it.
* `ScreenOutcome.status` is 'evaluated' (a finite fitness), 'degenerate' (the proxy reported non-finite
  values or no fitness: `error` is its reason, `result` its data) or 'failed' (the sandbox raised:
  timeout, crash, policy; `error` is "kind: message", `result` None). Never an exception for a bad
  candidate.
* Every evaluated outcome carries ``result["fitness_stderr"]``, the fitness's standard error from
  evaluation sampling (`lossforge.trainer.proxy.fitness`): the noise floor that the archive, the
  reflections, the prompts and the report compare differences with.
* `screen_for_fitness` with no variants is `screen_candidate`. With variants, a degenerate or failed
  first reading is the outcome as it is; a variant that turns degenerate or fails reads 0 (its reason is
  in ``result["readings"]``); ``result["complete"]`` says whether every variant was screened (False:
  lazily skipped below ``threshold``, and the fitness is the first reading, an upper bound of the min).
* Importing this module loads neither torch nor the proxy (they load on the first screen).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from lossforge.candidate.status import CandidateStatus

__all__ = ["ScreenOutcome", "check_candidate", "screen_candidate", "screen_for_fitness"]


def check_candidate(sandbox: Any, code: str, beta: float) -> Any:
    """The sandbox's unit-check report (`lossforge.candidate.report.CheckReport`) on `code` at `beta`."""
    return sandbox.check(code, beta=beta)


@dataclass(frozen=True)
class ScreenOutcome:
    """One proxy screen of one candidate (one seed, one beta)."""

    status: CandidateStatus  # EVALUATED, DEGENERATE or FAILED
    fitness: float | None
    error: str | None
    result: dict[str, Any] | None  # the proxy's ScreenResult as a dict (None when the sandbox failed)
    seconds: float  # wall time of the sandbox call


def screen_candidate(
    sandbox: Any,
    code: str,
    world: dict[str, Any],
    screen: dict[str, Any],
    seed: int,
    cache_dir: str,
    timeout: float,
) -> ScreenOutcome:
    """Screen `code` on the proxy world `world` of `seed` with the screen settings `screen`, in the sandbox."""
    from lossforge.sandbox.protocol import SandboxError
    from lossforge.trainer.proxy.api import screen_with_settings

    started = time.perf_counter()
    try:
        data = sandbox.run(code, screen_with_settings, world, screen, seed, cache_dir, timeout=timeout)
    except SandboxError as error:
        return ScreenOutcome(CandidateStatus.FAILED, None, f"{error.kind}: {error.message}", None, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    fitness = data.get("fitness")
    if not isinstance(fitness, (int, float)) or not math.isfinite(fitness):
        return ScreenOutcome(CandidateStatus.DEGENERATE, None, str(data.get("degenerate") or "non-finite fitness"), data, seconds)
    return ScreenOutcome(CandidateStatus.EVALUATED, float(fitness), None, data, seconds)


def _reading(outcome: ScreenOutcome, screen: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    data = outcome.result or {}
    return {
        "variant": variant,
        "beta": screen["beta"],
        "status": outcome.status,
        "fitness": outcome.fitness,
        "fitness_stderr": data.get("fitness_stderr") if outcome.status == CandidateStatus.EVALUATED else None,
        "error": outcome.error,
        "final_kl": data.get("final_kl"),
        "final_reward_gain": data.get("final_reward_gain"),
        "seconds": round(outcome.seconds, 3),
    }


def screen_for_fitness(
    sandbox: Any,
    code: str,
    proxy: Any,
    seed: int,
    cache_dir: str,
    timeout: float,
    threshold: float | None = None,
) -> ScreenOutcome:
    """The search's fitness of `code`: the screen of ``proxy.screen`` and of each ``proxy.fitness`` variant.

    `proxy` is a `ProxyConfig`. `threshold` is the archive's k-th best fitness, k =
    ``proxy.fitness.lazy_k`` (ignored when that is None; None: screen every variant). The outcome's
    `result` is the first screen's data (its path, KL, accuracy) with ``fitness`` the aggregate, plus
    ``readings`` (one per setting), ``aggregate`` and ``complete``; `seconds` add up all screens.
    """
    world = proxy.world.model_dump()
    settings = [s.model_dump() for s in proxy.fitness.settings(proxy.screen)]
    first = screen_candidate(sandbox, code, world, settings[0], seed, cache_dir, timeout)
    if not proxy.fitness.variants or first.status != CandidateStatus.EVALUATED:
        return first
    readings = [_reading(first, settings[0], {})]
    lazy = proxy.fitness.lazy_k is not None and threshold is not None and first.fitness < threshold
    seconds = first.seconds
    if not lazy:
        for variant, screen in zip(proxy.fitness.variants, settings[1:]):
            outcome = screen_candidate(sandbox, code, world, screen, seed, cache_dir, timeout)
            readings.append(_reading(outcome, screen, variant))
            seconds += outcome.seconds
    values = [r["fitness"] if r["fitness"] is not None else 0.0 for r in readings]
    stderrs = [r["fitness_stderr"] or 0.0 for r in readings]
    fitness = first.fitness if lazy else proxy.fitness.combine(values)
    stderr = stderrs[0] if lazy else proxy.fitness.combine_stderr(values, stderrs)
    result = {
        **(first.result or {}),
        "fitness": fitness,  # the archive's fitness; each setting's own is in readings
        "fitness_stderr": stderr,
        "readings": readings,
        "aggregate": proxy.fitness.aggregate,
        "complete": not lazy,
    }
    return ScreenOutcome(CandidateStatus.EVALUATED, fitness, None, result, seconds)
