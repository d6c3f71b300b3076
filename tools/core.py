"""The one code path that checks and screens a candidate, used by the tool API and by the search's nodes.

`check_candidate(sandbox, code, beta)` runs the unit-check suite in the sandbox and returns its
`CheckReport`; `screen_candidate(sandbox, code, world, screen, seed, cache_dir, timeout)` runs one
proxy screen in the sandbox and classifies it. `tools.api.check_loss` / `screen_loss` and
`agent.nodes.SearchNodes.check` / `screen` call exactly these two functions, so an agent using the tools
and the search itself see the same checks, the same fitness and the same failure classification.

What it guarantees
------------------
* Candidate code only runs in the given sandbox (`check` / `run`); nothing here executes it.
* `ScreenOutcome.status` is 'evaluated' (a finite fitness), 'degenerate' (the proxy reported non-finite
  values or no fitness: `error` is its reason, `result` its data) or 'failed' (the sandbox raised:
  timeout, crash, policy; `error` is "kind: message", `result` None). Never an exception for a bad
  candidate.
* Importing this module loads neither torch nor the proxy (they load on the first screen).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ScreenOutcome", "check_candidate", "screen_candidate"]


def check_candidate(sandbox: Any, code: str, beta: float) -> Any:
    """The sandbox's unit-check report (`lossforge.sandbox.report.CheckReport`) on `code` at `beta`."""
    return sandbox.check(code, beta=beta)


@dataclass(frozen=True)
class ScreenOutcome:
    """One proxy screen of one candidate (one seed, one beta)."""

    status: Literal["evaluated", "degenerate", "failed"]
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
        return ScreenOutcome("failed", None, f"{error.kind}: {error.message}", None, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    fitness = data.get("fitness")
    if not isinstance(fitness, (int, float)) or not math.isfinite(fitness):
        return ScreenOutcome("degenerate", None, str(data.get("degenerate") or "non-finite fitness"), data, seconds)
    return ScreenOutcome("evaluated", float(fitness), None, data, seconds)
