"""`lossforge bench proxy`: what one candidate costs on the proxy, measured, not asserted.

Reports the one-off world build (SFT, pairs, reference log-probs; cached afterwards), the cache load
that every candidate pays, and the screen of DPO at one beta and one seed, repeated, with its parts
(training steps, evaluations).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task, task_cache_path
from lossforge.settings.proxy import ProxyConfig
from lossforge.trainer.proxy.screen import screen


def bench_proxy(config: ProxyConfig, seed: int, cache_dir: Path, repeats: int = 3, loss: str = "dpo") -> dict[str, Any]:
    torch.set_num_threads(config.screen.threads)
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
        "loss": loss,
        "beta": config.screen.beta,
        "seed": seed,
    }
    path = task_cache_path(config.world, seed, cache_dir)
    if path.exists():
        out["world_build_seconds"] = None
        out["world_build_note"] = "cached already; delete the cache file to time a build"
    else:
        started = time.perf_counter()
        load_task(config.world, seed, cache_dir)
        out["world_build_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    task = load_task(config.world, seed, cache_dir)
    out["cache_load_seconds"] = round(time.perf_counter() - started, 3)
    seconds, fitness = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = screen(LIBRARY[loss], task, config.screen)
        seconds.append(time.perf_counter() - started)
        fitness.append(result.fitness)
    out["screen_seconds"] = {"median": round(statistics.median(seconds), 2), "min": round(min(seconds), 2), "max": round(max(seconds), 2), "repeats": repeats}
    out["candidate_seconds"] = round(statistics.median(seconds) + out["cache_load_seconds"], 2)
    out["fitness"] = fitness
    out["deterministic"] = len(set(fitness)) == 1
    out["settings"] = {"steps": config.screen.steps, "batch_pairs": config.screen.batch_pairs, "checkpoints": config.screen.checkpoints, "eval_samples": config.screen.eval_samples}
    return out
