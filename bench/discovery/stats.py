"""Statistics of the discovery bench over seeds: mean and spread (``_spread``), the best-so-far curve
summary, per-seed means of timings, the comparison with the library's best (``with_library_baseline``)
and the result without timing (``deterministic_view``).

Pure functions of their arguments: the same numbers give the same output (no sandbox, no clock).
"""
from __future__ import annotations

import statistics
from typing import Any

from lossforge.trainer.proxy.fitness import Z_WIN
from lossforge.trainer.proxy.heldout import stat

# -- statistics over seeds ---------------------------------------------------------------------------
def _spread(values: list[float]) -> dict[str, float | None]:
    s = stat(values)
    return {
        "mean": s.mean,
        "stderr": s.stderr,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "n": s.n,
    }


def curve_summary(curves: list[list[float | None]], evaluations: int) -> dict[str, Any]:
    """Mean and spread of best-so-far over seeds at every k = 1..evaluations."""
    rows = []
    for k in range(1, evaluations + 1):
        values = [c[k - 1] for c in curves if len(c) >= k and c[k - 1] is not None]
        rows.append({"evaluations": k, **_spread(values)})
    return {"by_evaluations": rows}


def _per_seed_mean(timings: list[dict[str, float]], key: str) -> float | None:
    values = [t[key] for t in timings if t.get(key) is not None]
    return round(statistics.fmean(values), 4) if values else None


def with_library_baseline(result: dict[str, Any]) -> dict[str, Any]:
    """Add `comparisons["evolution_minus_<other>_or_library"]`: evolution's best at the budget against, per
    seed, the better of the other proposer's best and the library's best.

    The evolutionary proposer spends its first evaluations on the library losses, so part of its lead
    over random search is the library itself; this comparison removes that part. A pure function of
    the result (it can be applied to a saved discovery.json and gives what the bench writes).
    """
    if "evolution" not in result["proposers"]:
        return result
    bar = {row["seed"]: row["fitness"] for row in result["library"]["per_seed_best"]}
    evo = {b["seed"]: b.get("fitness") for b in result["proposers"]["evolution"]["bests"]}
    for other, entry in result["proposers"].items():
        if other == "evolution":
            continue
        theirs = {b["seed"]: b.get("fitness") for b in entry["bests"]}
        diffs = [
            evo[s] - max(theirs[s], bar[s])
            for s in evo
            if evo[s] is not None and theirs.get(s) is not None and bar.get(s) is not None
        ]
        d = stat(diffs)
        result["comparisons"][f"evolution_minus_{other}_or_library"] = {
            "search_best_at_budget": d.model_dump(),
            "seeds_won_search": sum(1 for x in diffs if x > 0),
            "seeds_tied_search": sum(1 for x in diffs if x == 0),
            "wins_by_two_se_search": bool(d.mean is not None and d.stderr and d.mean > Z_WIN * d.stderr),
        }
    return result


def deterministic_view(result: Any) -> Any:
    """`result` without anything that depends on timing or the machine (keys `timing`, `machine`,
    `run_dir`): two runs of the bench with the same settings give equal views."""
    if isinstance(result, dict):
        return {k: deterministic_view(v) for k, v in result.items() if k not in ("timing", "machine", "run_dir", "worlds")}
    if isinstance(result, list):
        return [deterministic_view(v) for v in result]
    return result
