"""The loss library on the proxy: mean fitness and its standard error over seeds, per loss.

Two controls frame the table: `reference` (no training: fitness 0 by construction) and `anti_dpo`, DPO
with chosen and rejected swapped, which must score below the reference. Library losses are trusted code
and run in-process; candidates from a search never do (they go through the sandbox).

The fitness is read exactly as the search reads it: the frontier reading of each ``[proxy.fitness]``
setting (the screen and its variants), combined by its aggregate, with the sampling standard error of
the combined reading per seed (``fitness_stderr``); ``stderr`` is the standard error over seeds.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from lossforge.trainer.losses import LIBRARY
from lossforge.trainer.proxy.build import load_task
from lossforge.settings.proxy import ProxyConfig
from lossforge.trainer.proxy.screen import ScreenResult, screen


def anti_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """A deliberately wrong loss: DPO that prefers the rejected answer (a control, not a library loss)."""
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(-beta * margin)


class LeaderboardRow(BaseModel):
    name: str
    mean: float | None
    stderr: float | None
    n: int
    fitness: list[float | None]
    fitness_stderr: list[float | None] = []  # per seed: the sampling standard error of its reading
    final_kl_mean: float | None = None
    degenerate: list[str] = []
    control: bool = False


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, stderr


def leaderboard(
    config: ProxyConfig,
    seeds: list[int],
    cache_dir: Path,
    names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[LeaderboardRow]:
    """Screen each library loss (and the controls) on every seed; rows sorted by mean fitness."""
    losses: dict[str, Callable[..., torch.Tensor]] = {name: LIBRARY[name] for name in (names or list(LIBRARY))}
    losses["anti_dpo"] = anti_dpo
    results: dict[str, list[tuple[float | None, float | None, ScreenResult]]] = {name: [] for name in losses}
    settings = config.fitness.settings(config.screen)
    for seed in seeds:
        task = load_task(config.world, seed, cache_dir)
        for name, fn in losses.items():
            readings = [screen(fn, task, setting) for setting in settings]
            first = readings[0]
            if first.fitness is None:  # degenerate at the screen's own setting: no fitness, as in the search
                fitness, stderr = None, None
            else:  # a variant that turns degenerate reads 0, as in the search (tools/core.py)
                values = [r.fitness if r.fitness is not None else 0.0 for r in readings]
                fitness = config.fitness.combine(values)
                stderr = config.fitness.combine_stderr(values, [r.fitness_stderr or 0.0 for r in readings])
            results[name].append((fitness, stderr, first))
            if progress:
                progress(f"seed {seed} {name}: fitness {fitness}")
    rows = []
    for name, runs in results.items():
        fitness = [f for f, _, _ in runs]
        mean, stderr = _stats([f for f in fitness if f is not None])
        kls = [r.final_kl for _, _, r in runs if r.final_kl is not None]
        rows.append(
            LeaderboardRow(
                name=name,
                mean=mean,
                stderr=stderr,
                n=len(fitness),
                fitness=fitness,
                fitness_stderr=[se for _, se, _ in runs],
                final_kl_mean=statistics.fmean(kls) if kls else None,
                degenerate=[r.degenerate for _, _, r in runs if r.degenerate],
                control=name == "anti_dpo",
            )
        )
    rows.append(LeaderboardRow(name="reference", mean=0.0, stderr=0.0, n=len(seeds), fitness=[0.0] * len(seeds), control=True))
    rows.sort(key=lambda row: -math.inf if row.mean is None else row.mean, reverse=True)
    return rows
