"""The whole discovery bench (``run_discovery_bench``): worlds, the searches of every proposer on every
seed, the library bar, held-out evaluation, then the result assembled (``_assemble``) and written to
``discovery.json``.

Guarantees: an earlier bench in the output directory is replaced only with ``overwrite``; everything
that depends on timing or the machine sits under keys named ``timing`` and ``machine``.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lossforge.bench.discovery.config import DiscoveryBenchConfig
from lossforge.bench.discovery.search import (
    SearchOutcome,
    TimedSandbox,
    _label,
    _process_sandbox,
    funnel_fractions,
    library_bar,
    prepare_worlds,
    run_one_search,
)
from lossforge.bench.discovery.stats import _per_seed_mean, _spread, curve_summary, with_library_baseline
from lossforge.trainer.proxy.fitness import Z_WIN
from lossforge.trainer.proxy.heldout import HeldOutResult, evaluate_heldout, stat

# -- the bench ---------------------------------------------------------------------------------------
def _llm_skip_reason(config: DiscoveryBenchConfig) -> str | None:
    llm = config.run.proposer.llm
    if llm.api_key_env and not os.environ.get(llm.api_key_env):
        return f"no endpoint configured: ${llm.api_key_env} is not set (base_url {llm.base_url})"
    return None


def run_discovery_bench(
    config: DiscoveryBenchConfig,
    out_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the whole bench (see the module docstring); write `out_dir/discovery.json` and return it."""
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    if (out_dir / "runs").exists() or (out_dir / "discovery.json").exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} holds an earlier bench (runs/ or discovery.json); choose another --out or pass --overwrite")
        shutil.rmtree(out_dir / "runs", ignore_errors=True)
        (out_dir / "discovery.json").unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = config.run.resolved_cache_dir()
    started = time.perf_counter()
    machine = _machine()

    proposers = list(config.proposers)
    skipped: dict[str, str] = {}
    if "llm" in proposers:
        reason = _llm_skip_reason(config)
        if reason:
            skipped["llm"] = reason
            proposers.remove("llm")
    else:
        skipped["llm"] = "not requested: add llm to --proposers with an endpoint in [run.proposer.llm]"

    say(f"preparing worlds: search seeds {config.seeds}, held-out seeds {config.heldout.seeds}")
    worlds = prepare_worlds(config.run.proxy.world, list(config.seeds) + list(config.heldout.seeds), cache_dir, config.jobs)

    say(f"searching: {proposers} x seeds {config.seeds}, {config.evaluations} evaluated candidates each, {config.jobs} at a time")
    search_started = time.perf_counter()
    outcomes: list[SearchOutcome] = []
    lock = threading.Lock()

    def search(item: tuple[str, int]) -> SearchOutcome:
        kind, seed = item
        outcome = run_one_search(kind, seed, config, out_dir)
        with lock:
            say(f"  {kind} seed {seed}: {outcome.evaluated} evaluated, best {outcome.best and outcome.best['fitness']}, "
                f"{outcome.timing['wall_per_evaluated']} s per evaluated candidate")
        return outcome

    work = [(kind, seed) for seed in config.seeds for kind in proposers]
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs) as pool:
        outcomes = list(pool.map(search, work))
    search_seconds = time.perf_counter() - search_started

    shared = TimedSandbox(_process_sandbox(config.run, max_concurrency=config.jobs))
    try:
        say("screening the library on the search seeds (the bar to beat)")
        library = library_bar(config, cache_dir, shared)

        from lossforge.trainer.losses import library_code

        losses: dict[str, str] = {"dpo": library_code("dpo"), "discopop": library_code("discopop")}
        if library["best"] and library["best"] not in losses:
            losses[library["best"]] = library_code(library["best"])
        for kind in proposers:
            runs = [o for o in outcomes if o.proposer == kind and o.best is not None]
            if kind not in config.heldout_per_seed:
                runs = sorted(runs, key=lambda o: -o.best["fitness"])[:1]
            for o in runs:
                losses[_label(o)] = o.best["code"]
        say(f"held-out: {len(set(losses.values()))} losses x {len(config.heldout.conditions)} conditions x seeds {config.heldout.seeds}")
        heldout = evaluate_heldout(
            losses,
            config.run.proxy.world,
            config.run.proxy.screen,
            config.heldout,
            cache_dir,
            shared.run,
            jobs=config.jobs,
            timeout=config.run.sandbox.screen_timeout * 4,
        )
    finally:
        shared.close()

    result = with_library_baseline(_assemble(config, proposers, skipped, outcomes, library, heldout, worlds))
    result["machine"] = machine
    result["timing"] = {
        "total_seconds": round(time.perf_counter() - started, 1),
        "world_builds": worlds,
        "search_seconds": round(search_seconds, 1),
        "library_seconds": library["timing"]["seconds"],
        "heldout_seconds": heldout.timing.get("seconds"),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "jobs": config.jobs,
    }
    (out_dir / "discovery.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _assemble(
    config: DiscoveryBenchConfig,
    proposers: list[str],
    skipped: dict[str, str],
    outcomes: list[SearchOutcome],
    library: dict[str, Any],
    heldout: HeldOutResult,
    worlds: dict[str, Any],
) -> dict[str, Any]:
    by_kind: dict[str, list[SearchOutcome]] = {k: [o for o in outcomes if o.proposer == k] for k in proposers}
    bar = {row["seed"]: row["fitness"] for row in library["per_seed_best"]}
    dpo_row = next((r for r in library["ranking"] if r["name"] == "dpo"), None)
    summary: dict[str, Any] = {}
    for kind, runs in by_kind.items():
        finals = [o.curve[-1] for o in runs if o.curve and o.curve[-1] is not None]
        funnel = {key: sum(o.funnel[key] for o in runs) for key in runs[0].funnel if key != "rejected_by_check"}
        by_check: dict[str, int] = {}
        for o in runs:
            for name, n in o.funnel["rejected_by_check"].items():
                by_check[name] = by_check.get(name, 0) + n
        funnel["rejected_by_check"] = dict(sorted(by_check.items()))
        vs_bar = [o.curve[-1] - bar[o.seed] for o in runs if o.curve and o.curve[-1] is not None and bar.get(o.seed) is not None]
        labels = [_label(o) for o in runs if o.best and _label(o) in heldout.losses]
        held = [heldout.compare(label, "dpo") for label in labels]
        top = max((o for o in runs if o.best), key=lambda o: o.best["fitness"], default=None)
        top_label = _label(top) if top else None
        entry: dict[str, Any] = {
            "seeds": [o.seed for o in runs],
            "best_so_far": curve_summary([o.curve for o in runs], config.evaluations),
            "final_best": _spread(finals),
            "final_best_minus_library_best": _spread(vs_bar),
            "bests": [
                {"seed": o.seed, **({k: v for k, v in o.best.items() if k != "code"} if o.best else {}), "stop_reason": o.stop_reason, "evaluated": o.evaluated}
                for o in runs
            ],
            "funnel": funnel,
            "funnel_fractions": funnel_fractions(funnel),
            "heldout_minus_dpo_over_search_seeds": stat([c.overall.mean for c in held if c.overall.mean is not None]).model_dump(),
            "best_discovered": None
            if top_label is None
            else {
                "label": top_label,
                "search_fitness": top.best["fitness"],
                "code": top.best["code"],
                "heldout": heldout.losses[top_label].overall.model_dump(),
                "vs_dpo": heldout.compare(top_label, "dpo").model_dump(),
                "vs_discopop": heldout.compare(top_label, "discopop").model_dump(),
                **(
                    {"vs_library_best": heldout.compare(top_label, library["best"]).model_dump()}
                    if library["best"] in heldout.losses and library["best"] != top_label
                    else {}
                ),
            },
            "timing": {
                key: _per_seed_mean([o.timing for o in runs], key)
                for key in ("wall_per_evaluated", "screen_per_evaluated", "orchestration_per_evaluated", "loop_seconds", "search_seconds")
            },
        }
        entry["timing"]["orchestration_share_of_screen"] = (
            round(entry["timing"]["orchestration_per_evaluated"] / entry["timing"]["screen_per_evaluated"], 4)
            if entry["timing"]["screen_per_evaluated"]
            else None
        )
        if kind == "llm":
            llms = [o.llm for o in runs if o.llm]
            entry["llm"] = {
                "per_seed": llms,
                "tokens_per_evaluated": _per_seed_mean(llms, "tokens_per_evaluated"),
                "usd_per_evaluated": _per_seed_mean(llms, "usd_per_evaluated"),
            }
        summary[kind] = entry

    comparisons: dict[str, Any] = {}
    if "evolution" in by_kind:
        for other in [k for k in by_kind if k != "evolution"]:
            a = {o.seed: o for o in by_kind["evolution"]}
            b = {o.seed: o for o in by_kind[other]}
            seeds = [s for s in config.seeds if s in a and s in b and a[s].curve and b[s].curve]
            search_diff = [a[s].curve[-1] - b[s].curve[-1] for s in seeds if a[s].curve[-1] is not None and b[s].curve[-1] is not None]
            held_diff = []
            for s in seeds:
                la, lb = _label(a[s]), _label(b[s])
                if la in heldout.losses and lb in heldout.losses:
                    held_diff.append(heldout.losses[la].overall.mean - heldout.losses[lb].overall.mean)
            sd, hd = stat(search_diff), stat(held_diff)
            comparisons[f"evolution_minus_{other}"] = {
                "search_best_at_budget": sd.model_dump(),
                "heldout_of_bests": hd.model_dump(),
                "seeds_won_search": sum(1 for d in search_diff if d > 0),
                "seeds_won_heldout": sum(1 for d in held_diff if d > 0),
                "wins_by_two_se_search": bool(sd.mean is not None and sd.stderr and sd.mean > Z_WIN * sd.stderr),
                "wins_by_two_se_heldout": bool(hd.mean is not None and hd.stderr and hd.mean > Z_WIN * hd.stderr),
            }

    heldout_table = {
        label: {
            "overall": loss.overall.model_dump(),
            "by_condition": {k: v.model_dump() for k, v in loss.by_condition.items()},
            "fitness": loss.fitness,
            "failures": loss.failures,
            "vs_dpo": heldout.compare(label, "dpo").model_dump() if label != "dpo" else None,
        }
        for label, loss in heldout.losses.items()
    }
    return {
        "bench": "discovery",
        "settings": {
            "seeds": config.seeds,
            "evaluations": config.evaluations,
            "proposers": proposers,
            "skipped": skipped,
            "jobs": config.jobs,
            "search_proxy": config.run.proxy.model_dump(),
            "heldout": {
                "seeds": config.heldout.seeds,
                "eval_samples": config.heldout.eval_samples,
                "conditions": heldout.conditions,
                "statistics": "per held-out world seed, the mean fitness over the conditions (failures count as 0); "
                "mean and standard error over seeds; comparisons paired by seed",
            },
        },
        "library": {k: v for k, v in library.items() if k != "timing"},
        "library_dpo_on_search_seeds": dpo_row,
        "proposers": summary,
        "comparisons": comparisons,
        "heldout": heldout_table,
        "worlds": {"built": worlds["built"], "cached": worlds["cached"]},
    }


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
