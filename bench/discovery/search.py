"""The discovery bench's screens: one real search (``run_one_search``: run_search, the LangGraph graph,
the archive, the isolated sandbox timed from the outside by ``TimedSandbox``) read back into a
``SearchOutcome`` (best-so-far curve, rejection funnel, timings, LLM tokens and cost), the proxy worlds
built up front (``prepare_worlds``), and the library bar (``library_bar``: every library loss screened
with the search's own fitness).

Guarantees: candidate code runs only in the sandbox; curves, funnels and bests are functions of the
settings and the seed (only the ``timing`` values depend on the machine).
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from lossforge.bench.discovery.config import DiscoveryBenchConfig
from lossforge.config import RunConfig
from lossforge.rundir.funnel import Funnel
from lossforge.settings.proxy import WorldConfig
from lossforge.trainer.proxy.heldout import stat

# -- the sandbox, timed from the outside ---------------------------------------------------------------
class TimedSandbox:
    """A sandbox wrapper that adds up the wall time of `check` and `run` as the search sees it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.check_seconds = 0.0
        self.run_seconds = 0.0
        self.checks = 0
        self.runs = 0

    def check(self, code: str, beta: float = 0.1):
        started = time.perf_counter()
        try:
            return self.inner.check(code, beta=beta)
        finally:
            self.check_seconds += time.perf_counter() - started
            self.checks += 1

    def run(self, code: str, task: Callable[..., Any], *args: Any, timeout: float):
        started = time.perf_counter()
        try:
            return self.inner.run(code, task, *args, timeout=timeout)
        finally:
            self.run_seconds += time.perf_counter() - started
            self.runs += 1

    def close(self) -> None:
        self.inner.close()


def _process_sandbox(run: RunConfig, max_concurrency: int = 1) -> Any:
    from lossforge.sandbox.process import ProcessSandbox

    return ProcessSandbox(timeout=run.sandbox.check_timeout, memory_mb=run.sandbox.memory_mb, max_concurrency=max_concurrency)


# -- worlds ------------------------------------------------------------------------------------------
_BUILD = (
    "import json, sys, torch\n"
    "from pathlib import Path\n"
    "from lossforge.trainer.proxy.build import load_task\n"
    "from lossforge.settings.proxy import WorldConfig\n"
    "torch.set_num_threads(1)\n"
    "args = json.loads(sys.argv[1])\n"
    "load_task(WorldConfig(**args['world']), args['seed'], Path(args['cache_dir']))\n"
)


def prepare_worlds(world: WorldConfig, seeds: list[int], cache_dir: Path, jobs: int) -> dict[str, Any]:
    """Build the worlds of `seeds` that are not cached yet, `jobs` at a time, each in a fresh process
    with one torch thread (a process, not a thread: a build seeds torch's global random generator)."""
    from lossforge.trainer.proxy.build import task_cache_path

    missing = [s for s in seeds if not task_cache_path(world, s, cache_dir).exists()]
    started = time.perf_counter()

    def build(seed: int) -> None:
        args = json.dumps({"world": world.model_dump(), "seed": seed, "cache_dir": str(cache_dir)})
        done = subprocess.run([sys.executable, "-c", _BUILD, args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the proxy world of seed {seed} failed:\n{done.stderr[-2000:]}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(build, missing))
    return {"built": missing, "cached": [s for s in seeds if s not in missing], "seconds": round(time.perf_counter() - started, 2)}


# -- one search --------------------------------------------------------------------------------------
class SearchOutcome(BaseModel):
    proposer: str
    seed: int
    run_dir: str
    evaluated: int
    stop_reason: str | None
    curve: list[float | None]  # best fitness after k evaluated candidates, k = 1..evaluated
    best: dict[str, Any] | None  # id, name, fitness, code, code_hash
    funnel: dict[str, Any]
    llm: dict[str, Any] | None = None
    timing: dict[str, float]


def _label(o: SearchOutcome) -> str:
    return f"{o.proposer} seed {o.seed}: #{o.best['id']} {o.best['name']}" if o.best else f"{o.proposer} seed {o.seed}"


def _funnel(candidates: list[Any], n_variants: int = 0) -> dict[str, Any]:
    """The run's funnel (``rundir.funnel.Funnel``) plus the fitness variants' screens run and skipped."""
    counts = Funnel.of(candidates).as_dict()
    # [proxy.fitness] variants: the extra screens run, and those skipped lazily (below the top k)
    readings = [(c.result or {}) for c in candidates if c.status == "evaluated" and "readings" in (c.result or {})]
    counts["variant_screens"] = sum(len(r["readings"]) - 1 for r in readings)
    counts["variant_screens_skipped"] = n_variants * sum(1 for r in readings if r.get("complete") is False)
    return counts


def funnel_fractions(counts: dict[str, Any]) -> dict[str, float | None]:
    """Each stage's rejections as a share of what reached that stage (``Funnel.fractions`` of a bench's counts)."""
    return Funnel.from_counts(counts).fractions()


def _curve(candidates: list[Any]) -> list[float | None]:
    evaluated = sorted((c for c in candidates if c.generation is not None), key=lambda c: c.generation)
    out: list[float | None] = []
    best: float | None = None
    for c in evaluated:
        if c.fitness is not None and (best is None or c.fitness > best):
            best = c.fitness
        out.append(best)
    return out


def run_one_search(kind: str, seed: int, config: DiscoveryBenchConfig, out_dir: Path) -> SearchOutcome:
    """One real search (run_search, LangGraph, archive, sandbox) until `config.evaluations` evaluations."""
    from lossforge.rundir.archive import Archive
    from lossforge.rundir.archive import LLM_BUDGET_META
    from lossforge.agent.runner import ARCHIVE_FILE, run_search

    run_config = config.run.model_copy(deep=True)
    run_config.search.seed = seed
    run_config.search.generations = config.evaluations
    run_config.proposer.kind = kind  # type: ignore[assignment]
    run_dir = out_dir / "runs" / f"{kind}-seed{seed}"
    sandbox = TimedSandbox(_process_sandbox(run_config))
    marks: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["kind"] in ("run_started", "run_resumed"):
            marks["loop_start"] = time.perf_counter()
        elif event["kind"] == "run_stopped":
            marks["loop_end"] = time.perf_counter()

    started = time.perf_counter()
    try:
        sandbox.inner.warm()  # the server start (once per process) is not the search's cost
        warm_seconds = time.perf_counter() - started
        summary = run_search(run_dir, run_config, on_event=on_event, sandbox=sandbox)
    finally:
        sandbox.close()
    archive = Archive(run_dir / ARCHIVE_FILE, readonly=True)
    try:
        candidates = archive.all()
        top = archive.top(1)
        budget = archive.get_meta(LLM_BUDGET_META)
    finally:
        archive.close()
    evaluated = summary.evaluated
    loop = marks.get("loop_end", time.perf_counter()) - marks.get("loop_start", started)
    propose = sum(c.timings.get("propose", 0.0) for c in candidates)
    orchestration = loop - propose - sandbox.check_seconds - sandbox.run_seconds
    per = (lambda x: round(x / evaluated, 4)) if evaluated else (lambda x: None)
    timing = {
        "search_seconds": round(summary.seconds, 2),
        "sandbox_warm_seconds": round(warm_seconds, 2),
        "loop_seconds": round(loop, 2),
        "propose_seconds": round(propose, 3),
        "check_seconds": round(sandbox.check_seconds, 3),
        "screen_seconds": round(sandbox.run_seconds, 3),
        "orchestration_seconds": round(orchestration, 3),
        "wall_per_evaluated": per(loop),
        "screen_per_evaluated": per(sandbox.run_seconds),
        "orchestration_per_evaluated": per(orchestration),
        "checks": sandbox.checks,
        "screens": sandbox.runs,
    }
    llm = None
    if kind == "llm" and budget:
        tokens = int(budget.get("prompt_tokens", 0)) + int(budget.get("completion_tokens", 0))
        llm = {
            "calls": budget.get("calls"),
            "prompt_tokens": budget.get("prompt_tokens"),
            "completion_tokens": budget.get("completion_tokens"),
            "usd": budget.get("usd"),
            "tokens_per_evaluated": per(tokens),
            "usd_per_evaluated": per(float(budget.get("usd", 0.0))),
        }
    best = None
    if top:
        b = top[0]
        best = {"id": b.id, "name": b.name, "fitness": b.fitness, "code": b.code, "code_hash": b.code_hash, "operator": b.operator}
    return SearchOutcome(
        proposer=kind,
        seed=seed,
        run_dir=str(run_dir),
        evaluated=evaluated,
        stop_reason=summary.stop_reason,
        curve=_curve(candidates),
        best=best,
        funnel=_funnel(candidates, len(run_config.proxy.fitness.variants)),
        llm=llm,
        timing=timing,
    )


# -- the library bar ---------------------------------------------------------------------------------
def library_bar(config: DiscoveryBenchConfig, cache_dir: Path, sandbox: Any) -> dict[str, Any]:
    """Every library loss on every search seed with the search's own fitness (in the sandbox): every
    ``[proxy.fitness]`` variant screened (no lazy skipping), aggregated as the search aggregates."""
    from lossforge.tools.core import screen_for_fitness
    from lossforge.trainer.losses import LIBRARY, library_code

    names = config.library or list(LIBRARY)
    proxy = config.run.proxy
    work = [(name, seed) for name in names for seed in config.seeds]

    def one(item: tuple[str, int]) -> tuple[float | None, list[float | None]]:
        name, seed = item
        outcome = screen_for_fitness(sandbox, library_code(name), proxy, seed, str(cache_dir), config.run.sandbox.screen_timeout)
        readings = [r["fitness"] for r in (outcome.result or {}).get("readings", [])] or [outcome.fitness]
        return outcome.fitness, readings

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs) as pool:
        values = list(pool.map(one, work))
    fitness: dict[str, list[float | None]] = {name: [] for name in names}
    readings: dict[str, list[list[float | None]]] = {name: [] for name in names}
    for (name, _), (value, per_setting) in zip(work, values):
        fitness[name].append(value)
        readings[name].append(per_setting)
    settings = proxy.fitness.settings(proxy.screen)
    rows = []
    for name, vals in fitness.items():
        s = stat([v for v in vals if v is not None])
        by_setting = [
            stat([r[i] for r in readings[name] if len(r) > i and r[i] is not None]).mean for i in range(len(settings))
        ]
        rows.append({"name": name, "fitness": vals, "mean": s.mean, "stderr": s.stderr, "n": s.n, "by_setting": by_setting})
    rows.sort(key=lambda r: -math.inf if r["mean"] is None else r["mean"], reverse=True)
    per_seed_best = []
    for i, seed in enumerate(config.seeds):
        scored = [(vals[i], name) for name, vals in fitness.items() if vals[i] is not None]
        value, name = max(scored) if scored else (None, None)
        per_seed_best.append({"seed": seed, "name": name, "fitness": value})
    return {
        "ranking": rows,
        "best": rows[0]["name"] if rows else None,
        "per_seed_best": per_seed_best,
        "settings": [{"beta": s.beta, "variant": v} for s, v in zip(settings, [{}, *proxy.fitness.variants])],
        "aggregate": proxy.fitness.aggregate,
        "timing": {"seconds": round(time.perf_counter() - started, 2), "screens": len(work) * len(settings)},
    }
