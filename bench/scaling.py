"""`lossforge bench scaling`: evaluated candidates per hour and the agent's own time against K in flight.

``run_scaling_bench(settings)`` runs the real search (``agent.runner.run_search``, the run's own sandbox
with ``max_concurrency = K``) once per K and case, each in a fresh run directory, to a fixed number of
evaluated candidates, and reports per run: evaluated, wall seconds, candidates per hour, the speed-up
against K = 1, and ``RunSummary.timings`` (agent: the supervisor's own time plus each walk's time
outside its nodes; work: the time inside the nodes, summed over the walks) with their ratio. Cases:

* ``cpu``: CPU screens on this machine (the evolution or random proposer on a small proxy). Each K runs
  with ``[proxy.screen] threads = max(1, cores // K)`` ("split") and with 1 ("one") when they differ;
  ``best`` names the setting with the most candidates per hour. Speed-ups are against the best K = 1 row.
* ``llm``: a latency-bound LLM proposer: the project's fake OpenAI server answering every request
  (proposal and reflection) after ``llm_seconds``, distinct valid DPO-form losses (so dedup rejects none)
  and a cheap screen, so the LLM's latency dominates. The issue's bar: K = 4 gives at least 3.2x the
  candidates per hour of K = 1.
* ``ray``: as ``cpu`` with ``[search] executor = "ray"`` (a local Ray instance per run, started before its
  wall time, unless ``ray_address`` names a cluster; Ray runs at most as many screens at once as it has
  CPUs, whatever K). Skipped, with the
  reason, when Ray or the Ray sandbox (``lossforge.sandbox.ray_sandbox``) is not there, or a run fails.

Guarantees: the JSON's structure depends only on the settings (a skipped case has ``status`` and
``reason`` and no runs); every run's ``counts`` are the archive's rows by status; the proxy world is
built before any run and the world build is outside every wall time (``timings.wall`` starts with the
supervisor). Not guaranteed: timings are of this machine now; other load skews them (the load averages
before and after are reported), and the sandbox server's start (about a second) is inside each wall.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator

from lossforge.config import RunConfig
from lossforge.settings.base import Strict
from lossforge.settings.proxy import ScreenConfig, WorldConfig

__all__ = ["SCALING_WORLD", "CPU_SCREEN", "LLM_SCREEN", "LLM_KEY_ENV", "ScalingBenchConfig", "llm_script",
           "run_scaling_bench"]

Case = Literal["cpu", "llm", "ray"]

#: A small proxy world (seconds to build; cached like any world).
SCALING_WORLD = WorldConfig(sft_sequences=1024, sft_steps=40, sft_batch=64, train_pairs=256, eval_prompts=128,
                            reference_samples_per_prompt=2)
#: The CPU case's screen: a few seconds of CPU per candidate (threads are set per run).
CPU_SCREEN = ScreenConfig(steps=24, batch_pairs=32, checkpoints=3, eval_samples=256, lr=3e-4, threads=1)
#: The LLM case's screen: as cheap as the proxy allows, so the LLM's latency dominates.
LLM_SCREEN = ScreenConfig(steps=2, batch_pairs=16, checkpoints=1, eval_samples=32, lr=3e-4, threads=1)
#: The variable the LLM case's (fake) API key is read from; set for the bench's runs when unset.
LLM_KEY_ENV = "LOSSFORGE_BENCH_FAKE_KEY"
#: The issue's targets: K = 4 against K = 1 in the latency-bound case; agent time over work time.
LLM_SPEEDUP_BAR = 3.2
AGENT_SHARE_BARS = {1: 0.02, 8: 0.05}

_PROPOSE = r"This is proposal|Repair this candidate"  # in proposal and repair prompts, never in reflections
_REFLECT = r"Your reflection"
_SIGNATURE = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
_MARGIN = "    margin = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"


class ScalingBenchConfig(Strict):
    """What the scaling bench runs; the defaults are the documented benchmark (about 10 minutes on 2 cores)."""

    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1, description="Candidates in flight to compare.")
    cases: list[Case] = Field(default_factory=lambda: ["cpu", "llm", "ray"], min_length=1)
    cpu_evaluations: int = Field(16, ge=1, description="Evaluated candidates per run of the cpu case.")
    llm_evaluations: int = Field(16, ge=1, description="Evaluated candidates per run of the llm case.")
    ray_evaluations: int = Field(16, ge=1, description="Evaluated candidates per run of the ray case.")
    llm_seconds: float = Field(2.0, ge=0, description="Seconds the fake server takes to answer every request.")
    proposer: Literal["evolution", "random"] = Field("evolution", description="The cpu and ray cases' proposer.")
    seed: int = Field(0, ge=0, description="Search seed and proxy world seed.")
    cache_dir: Path | None = Field(None, description="Where the proxy world is cached (default: the run config's).")
    ray_address: str | None = Field(None, description="The ray case's [search] ray_address (none: a local Ray).")

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 or k > 256 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"ks must be distinct integers from 1 to 256, got {ks}")
        if 1 not in ks:
            raise ValueError(f"ks must include 1 (speed-ups are against K = 1), got {ks}")
        return sorted(ks)

    @field_validator("cases")
    @classmethod
    def _cases(cls, cases: list[str]) -> list[str]:
        return [case for case in ("cpu", "llm", "ray") if case in cases]


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cores": cores(), "cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version()}


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- the LLM case's script ----------------------------------------------------------------------
def _loss_code(index: int) -> tuple[str, str]:
    """The ``index``-th distinct valid DPO-form loss (name, code): scaled logistic, logistic plus a squared
    softplus, and logistic plus a hinge, with constants that differ by ``index``."""
    family, rank = index % 3, index // 3
    if family == 0:
        name, body = f"scaled_sigmoid_{index}", f"-F.logsigmoid({0.6 + 0.15 * rank:.2f} * beta * margin)"
    elif family == 1:
        name, body = f"sigmoid_sq_softplus_{index}", f"-F.logsigmoid(beta * margin) + {0.05 + 0.05 * rank:.2f} * F.softplus(-beta * margin) ** 2"
    else:
        name, body = f"sigmoid_hinge_{index}", f"-F.logsigmoid(beta * margin) + {0.05 + 0.05 * rank:.2f} * torch.relu(1.0 - beta * margin)"
    code = f"import torch\nimport torch.nn.functional as F\n\ndef {name}({_SIGNATURE}):\n{_MARGIN}    return {body}\n"
    return name, code


def llm_script(proposals: int, seconds: float) -> list[dict[str, Any]]:
    """The fake server's script: ``proposals`` distinct valid losses, each answered after ``seconds``, and
    as many reflections (one per candidate), also after ``seconds``."""
    import json

    steps: list[dict[str, Any]] = []
    for index in range(proposals):
        name, code = _loss_code(index)
        answer = json.dumps({"thought": f"variant {index} of the DPO margin loss", "name": name, "code": code})
        steps.append({"match": _PROPOSE, "text": answer, "seconds": seconds})
        steps.append({"match": _REFLECT, "text": f"Variant {index} scored; try another constant.", "seconds": seconds})
    return steps


# -- one run ------------------------------------------------------------------------------------
def _run_config(settings: ScalingBenchConfig, screen: ScreenConfig, k: int, evaluations: int, **extra: Any) -> RunConfig:
    data: dict[str, Any] = {
        "proxy": {"world": SCALING_WORLD.model_dump(), "screen": screen.model_dump()},
        "search": {"generations": evaluations, "seed": settings.seed, "concurrency": k,
                   "max_proposals_per_generation": 100_000, **extra.pop("search", {})},
        "proposer": extra.pop("proposer", {"kind": settings.proposer}),
    }
    if settings.cache_dir is not None:
        data["cache_dir"] = str(settings.cache_dir)
    return RunConfig.model_validate(data)


def _measure(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """One search to its target; the row of the report (without speed-ups)."""
    from lossforge.agent.runner import run_search

    summary = run_search(run_dir, config)
    timings = summary.timings
    wall, work, agent = timings["wall"], timings["work"], timings["agent"]
    k = config.search.concurrency
    return {
        "k": k,
        "threads": config.proxy.screen.threads,
        "evaluated": summary.evaluated,
        "proposals": sum(summary.counts.values()),
        "counts": dict(sorted(summary.counts.items())),
        "stop_reason": summary.stop_reason,
        "wall_s": round(wall, 3),
        "candidates_per_hour": round(3600.0 * summary.evaluated / wall, 1) if wall > 0 else None,
        "speedup_vs_k1": None,
        "agent_s": round(agent, 3),
        "work_s": round(work, 3),
        "agent_over_work": round(agent / work, 5) if work > 0 else None,
        # K = 1 only: wall time neither in a node nor counted as the agent's (checkpoint writes, graph steps)
        "unattributed_s": round(wall - work - agent, 3) if k == 1 else None,
    }


def _with_speedups(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups against the best K = 1 run; the best run; agent shares against the issue's bars."""
    base = max((r["candidates_per_hour"] or 0.0 for r in runs if r["k"] == 1), default=0.0)
    for run in runs:
        run["speedup_vs_k1"] = round(run["candidates_per_hour"] / base, 3) if base and run["candidates_per_hour"] else None
    best = max(runs, key=lambda r: r["candidates_per_hour"] or 0.0)
    bars = []
    for k, bar in AGENT_SHARE_BARS.items():
        shares = [r["agent_over_work"] for r in runs if r["k"] == k and r["agent_over_work"] is not None]
        if shares:
            bars.append({"k": k, "max_agent_over_work": bar, "measured": max(shares), "met": max(shares) <= bar})
    return {"runs": runs, "best": {"k": best["k"], "threads": best["threads"],
                                   "candidates_per_hour": best["candidates_per_hour"]},
            "agent_share_bars": bars}


# -- the cases ----------------------------------------------------------------------------------
def _cpu_case(settings: ScalingBenchConfig, root: Path, progress: Callable[[str], None], *,
              executor: str = "local") -> dict[str, Any]:
    n = settings.ray_evaluations if executor == "ray" else settings.cpu_evaluations
    runs: list[dict[str, Any]] = []
    for k in settings.ks:
        split = max(1, cores() // k)
        rules = {"split": split, "one": 1}
        for threads in sorted(set(rules.values()), reverse=True):
            screen = CPU_SCREEN.model_copy(update={"threads": threads})
            search = {"executor": executor, "ray_address": settings.ray_address} if executor == "ray" else {}
            config = _run_config(settings, screen, k, n, search=search)
            progress(f"{executor}: K={k} threads={threads}, {n} candidates")
            row = _measure(root / f"{executor}-k{k}-t{threads}", config)
            row["threads_rules"] = sorted(rule for rule, value in rules.items() if value == threads)
            runs.append(row)
    return {"status": "ok", "evaluations": n, "proposer": settings.proposer, "executor": executor,
            "threads_rules": {"split": "max(1, cores // K)", "one": "1"},
            "proxy": {"world": SCALING_WORLD.model_dump(), "screen": CPU_SCREEN.model_dump(exclude={"threads"})},
            **_with_speedups(runs)}


def _llm_case(settings: ScalingBenchConfig, root: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    from lossforge.llm.fake_server import FakeServer

    os.environ.setdefault(LLM_KEY_ENV, "sk-fake-scaling-bench")
    n = settings.llm_evaluations
    runs: list[dict[str, Any]] = []
    for k in settings.ks:
        # a fresh server per run: its distinct losses start again; more than the run needs (repairs, tail)
        with FakeServer(llm_script(n + 2 * k, settings.llm_seconds), loop=True) as server:
            proposer = {"kind": "llm", "llm": {
                "base_url": server.base_url, "api_key_env": LLM_KEY_ENV, "max_retries": 2, "timeout": 60,
                "models": [{"name": "fake-model", "temperature": 0.5}]}}
            config = _run_config(settings, LLM_SCREEN, k, n, proposer=proposer)
            progress(f"llm: K={k}, {n} candidates, {settings.llm_seconds:g} s per answer")
            row = _measure(root / f"llm-k{k}", config)
            row["llm_requests"] = len(server.chat_requests)
            row["llm_max_in_flight"] = server.max_in_flight
        runs.append(row)
    result = {"status": "ok", "evaluations": n, "llm_seconds": settings.llm_seconds, "proposer": "llm",
              "proxy": {"world": SCALING_WORLD.model_dump(), "screen": LLM_SCREEN.model_dump()},
              **_with_speedups(runs)}
    at_4 = next((r["speedup_vs_k1"] for r in runs if r["k"] == 4), None)
    result["speedup_bar"] = {"k": 4, "min_speedup": LLM_SPEEDUP_BAR, "measured": at_4,
                             "met": None if at_4 is None else at_4 >= LLM_SPEEDUP_BAR}
    return result


def ray_skip_reason() -> str | None:
    """Why the ray case cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'ray[default]')"
    if importlib.util.find_spec("lossforge.sandbox.ray_sandbox") is None:
        return "executor = 'ray' is not available: lossforge.sandbox.ray_sandbox does not exist yet"
    return None


def _ray_case(settings: ScalingBenchConfig, root: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    reason = ray_skip_reason()
    if reason is None:
        try:
            return _cpu_case(settings, root, progress, executor="ray")
        except Exception as error:  # reported, not fatal: the other cases stand
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Ray colours its task errors
            reason = f"a run with executor = 'ray' failed: {type(error).__name__}: {text}"
    progress(f"ray: skipped: {reason}")
    return {"status": "skipped", "reason": reason}


def run_scaling_bench(settings: ScalingBenchConfig, work_dir: Path | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the configured cases at every K and return the report (see the module docstring).

    ``work_dir``: where the run directories go (default: a temporary directory, removed afterwards)."""
    from lossforge.trainer.proxy.api import prepare

    say = progress or (lambda message: None)
    machine = {**_machine(), "load_average_before": _load()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lossforge-scaling-") as scratch:
        root = Path(work_dir) if work_dir is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        probe = _run_config(settings, CPU_SCREEN, 1, 1)
        say("building the proxy world (cached)")
        prepare(probe.proxy, settings.seed, probe.resolved_cache_dir())
        cases: dict[str, Any] = {}
        for case in settings.cases:
            if case == "cpu":
                cases[case] = _cpu_case(settings, root, say)
            elif case == "llm":
                cases[case] = _llm_case(settings, root, say)
            else:
                cases[case] = _ray_case(settings, root, say)
    machine["load_average_after"] = _load()
    return {
        "bench": "scaling",
        "settings": settings.model_dump(mode="json", exclude={"cache_dir"}),
        "machine": machine,
        "seconds": round(time.perf_counter() - started, 1),
        "cases": cases,
    }
