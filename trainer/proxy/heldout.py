"""Held-out proxy settings: re-evaluate losses where no search ever looked, with stated statistics.

A discovered loss is selected on the search's own proxy setting (its world seeds, one beta, one label
noise, one training length), so its search fitness is biased upwards (the winner's curse) and may not
transfer. This module re-screens losses on *held-out* settings, fixed before any search:

* other world seeds (new languages, rewards, SFT models and preference pairs; never searched on),
* and, on those seeds, other conditions: other betas, more label noise, longer training.

What it guarantees
------------------
* ``HeldOutConfig`` is validated by pydantic; its conditions are overrides of the search's
  ``ScreenConfig`` (plus extra label noise), so "held-out" always means "the search's settings with
  these changes", never a silently different task.
* ``heldout_screen`` is a module-level, picklable sandbox task: candidate code only runs in the sandbox.
  It loads a world already cached on disk (the caller prepares the worlds first: the sandbox's view of
  the cache is read-only).
* Extra label noise swaps chosen and rejected (and their reference log-probs) on a fixed random subset
  of the training pairs, drawn from a generator seeded by the world seed only: every loss sees the same
  noisier data. ``total_label_noise`` gives the resulting flip probability.
* Statistics (``stat``, ``summarise``): mean, standard error (sample standard deviation / sqrt(n)) and
  n. The unit of replication is the held-out *world seed*: a loss's score on a seed is its mean fitness
  over the conditions, and a comparison with another loss is paired by seed. A screen that fails or
  turns degenerate on held-out data counts as fitness 0 (the reference: the trained policy would be
  thrown away) and is counted in ``failures``.

What it does not guarantee
--------------------------
* Independence across conditions: the conditions of one seed share a world, which is why the seed, not
  the (seed, condition) pair, is the unit of the standard error.
"""
from __future__ import annotations

import concurrent.futures
import math
import statistics
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, Field, model_validator

from lossforge.settings.base import Strict

from lossforge.trainer.proxy.build import ProxyTask, load_task
from lossforge.settings.proxy import ScreenConfig, WorldConfig, apply_overrides, unknown_screen_fields
from lossforge.trainer.proxy.fitness import is_win
from lossforge.trainer.proxy.screen import LossFn, screen

__all__ = [
    "HeldOutCondition",
    "HeldOutConfig",
    "HeldOutResult",
    "Stat",
    "condition_screen",
    "evaluate_heldout",
    "heldout_screen",
    "stat",
    "total_label_noise",
    "with_extra_label_noise",
]


class HeldOutCondition(Strict):
    """One held-out condition: changes to the search's screen settings, and optional extra label noise."""

    name: str = Field(min_length=1)
    screen: dict[str, Any] = Field(default_factory=dict, description="Overrides of the search's ScreenConfig fields.")
    extra_label_noise: float = Field(0.0, ge=0, lt=0.5, description="Share of training pairs whose labels are swapped.")

    @model_validator(mode="after")
    def _known_fields(self) -> "HeldOutCondition":
        unknown = unknown_screen_fields(self.screen)
        if unknown:
            raise ValueError(f"condition {self.name!r}: unknown screen fields {unknown}")
        return self


class HeldOutConfig(Strict):
    """Held-out world seeds, the conditions screened on each, and the evaluation precision."""

    seeds: list[int] = Field(default_factory=lambda: [1000, 1001, 1002, 1003, 1004], min_length=1)
    conditions: list[HeldOutCondition] = Field(default_factory=lambda: list(DEFAULT_CONDITIONS), min_length=1)
    eval_samples: int | None = Field(None, ge=32, description="Policy samples per evaluation (None: the search's).")

    @model_validator(mode="after")
    def _unique(self) -> "HeldOutConfig":
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"condition names must be unique, got {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"held-out seeds must be unique, got {self.seeds}")
        return self


#: The default held-out conditions, applied on top of the search's screen settings. "2x training" doubles
#: the steps (set from the search's own steps by ``condition_screen`` when ``steps`` is not given).
DEFAULT_CONDITIONS: tuple[HeldOutCondition, ...] = (
    HeldOutCondition(name="search settings"),
    HeldOutCondition(name="beta 0.025", screen={"beta": 0.025}),  # half the search's lower beta (0.05)
    HeldOutCondition(name="beta 0.2", screen={"beta": 0.2}),  # twice its upper one (0.1)
    HeldOutCondition(name="label noise 0.25", extra_label_noise=0.25),  # the default world's labels are clean
    HeldOutCondition(name="2x training", screen={"steps": "2x"}),
)


def condition_screen(base: ScreenConfig, condition: HeldOutCondition, eval_samples: int | None) -> ScreenConfig:
    """The screen settings of `condition`: the search's `base` with the overrides applied.

    A value of the form ``"<k>x"`` multiplies the base's (``steps = "2x"``: twice the search's steps;
    checkpoints stay as they are, so they spread over the longer run).
    """
    overrides = dict(condition.screen)
    if eval_samples is not None:
        overrides["eval_samples"] = eval_samples
    return apply_overrides(base, overrides)


def total_label_noise(base: float, extra: float) -> float:
    """Flip probability after swapping a share `extra` of pairs whose labels were flipped with `base`."""
    return base * (1 - extra) + (1 - base) * extra


def with_extra_label_noise(task: ProxyTask, extra: float) -> ProxyTask:
    """A copy of `task` with chosen/rejected swapped on a fixed random share `extra` of the pairs."""
    if extra <= 0:
        return task
    generator = torch.Generator().manual_seed(task.seed * 7919 + 104729)
    swap = torch.rand(len(task.chosen), generator=generator) < extra
    column = swap.unsqueeze(1)
    return ProxyTask(
        config=task.config,
        seed=task.seed,
        world=task.world,
        reference_state=task.reference_state,
        train_prompts=task.train_prompts,
        chosen=torch.where(column, task.rejected, task.chosen),
        rejected=torch.where(column, task.chosen, task.rejected),
        reference_chosen_logps=torch.where(swap, task.reference_rejected_logps, task.reference_chosen_logps),
        reference_rejected_logps=torch.where(swap, task.reference_chosen_logps, task.reference_rejected_logps),
        eval_prompts=task.eval_prompts,
        reference_reward=task.reference_reward,
        stats={**task.stats, "extra_label_noise": extra, "swapped_pairs": int(swap.sum())},
    )


def heldout_screen(
    loss_fn: LossFn, world: dict[str, Any], screen_settings: dict[str, Any], seed: int, cache_dir: str, extra_label_noise: float
) -> dict[str, Any]:
    """Screen `loss_fn` on the cached world of `seed` under one held-out condition (a sandbox task)."""
    task = with_extra_label_noise(load_task(WorldConfig(**world), seed, Path(cache_dir)), extra_label_noise)
    return screen(loss_fn, task, ScreenConfig(**screen_settings)).model_dump()


class Stat(BaseModel):
    """Mean, standard error and number of values (the standard error is None for fewer than 2)."""

    mean: float | None
    stderr: float | None
    n: int

    def z(self) -> float | None:
        """Mean in units of its standard error (None when undefined)."""
        if self.mean is None or not self.stderr:
            return None
        return self.mean / self.stderr


def stat(values: list[float]) -> Stat:
    """`Stat` of `values` (sample standard deviation / sqrt(n))."""
    if not values:
        return Stat(mean=None, stderr=None, n=0)
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return Stat(mean=mean, stderr=stderr, n=len(values))


class LossHeldOut(BaseModel):
    """One loss on every held-out (condition, seed): raw fitness, per-condition and overall statistics."""

    label: str
    fitness: dict[str, list[float | None]]  # condition -> one value per held-out seed (None: failed/degenerate)
    failures: list[str] = Field(default_factory=list)
    by_condition: dict[str, Stat]
    per_seed: list[float]  # mean over conditions per seed, failures counted as 0
    overall: Stat


class Comparison(BaseModel):
    """`label` minus `reference`, paired by held-out seed (overall) and by (condition, seed)."""

    label: str
    reference: str
    overall: Stat
    by_condition: dict[str, Stat]
    wins_by_two_se: bool  # overall mean above 0 beyond the noise floor (fitness.is_win: Z_WIN = 2 standard errors)
    seeds_won: int  # held-out seeds where the label's per-seed mean is higher


class HeldOutResult(BaseModel):
    """Every loss's held-out results, and the settings that produced them."""

    seeds: list[int]
    conditions: list[dict[str, Any]]
    losses: dict[str, LossHeldOut]
    timing: dict[str, float] = Field(default_factory=dict)

    def compare(self, label: str, reference: str) -> Comparison:
        a, b = self.losses[label], self.losses[reference]
        overall = stat([x - y for x, y in zip(a.per_seed, b.per_seed)])
        by_condition = {
            name: stat([(x or 0.0) - (y or 0.0) for x, y in zip(a.fitness[name], b.fitness[name])]) for name in a.fitness
        }
        wins = overall.mean is not None and overall.stderr is not None and is_win(overall.mean, overall.stderr, 0.0, None)
        return Comparison(
            label=label,
            reference=reference,
            overall=overall,
            by_condition=by_condition,
            wins_by_two_se=bool(wins),
            seeds_won=sum(1 for x, y in zip(a.per_seed, b.per_seed) if x > y),
        )


def summarise(label: str, fitness: dict[str, list[float | None]], failures: list[str]) -> LossHeldOut:
    """Per-condition and overall statistics of one loss's held-out fitness values."""
    names = list(fitness)
    n_seeds = len(fitness[names[0]])
    per_seed = [statistics.fmean((fitness[name][i] or 0.0) for name in names) for i in range(n_seeds)]
    return LossHeldOut(
        label=label,
        fitness=fitness,
        failures=failures,
        by_condition={name: stat([v or 0.0 for v in values]) for name, values in fitness.items()},
        per_seed=per_seed,
        overall=stat(per_seed),
    )


def evaluate_heldout(
    losses: dict[str, str],
    world: WorldConfig,
    base_screen: ScreenConfig,
    config: HeldOutConfig,
    cache_dir: Path,
    run: Callable[..., dict[str, Any]],
    jobs: int = 1,
    timeout: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> HeldOutResult:
    """Screen every loss (label -> source) on every held-out (condition, seed).

    `run(code, task, *args, timeout=...)` is a sandbox's ``run``; `jobs` screens run at once (the
    sandbox must allow that many children). The worlds of ``config.seeds`` must be cached already.
    Identical sources are screened once.
    """
    import time

    started = time.perf_counter()
    unique: dict[str, str] = {}
    for code in losses.values():
        unique.setdefault(code, f"code{len(unique)}")
    work = []
    for code in unique:
        for condition in config.conditions:
            settings = condition_screen(base_screen, condition, config.eval_samples).model_dump()
            for seed in config.seeds:
                work.append((code, condition, settings, seed))

    def one(item: tuple) -> tuple[str, str, int, float | None, str | None]:
        code, condition, settings, seed = item
        try:
            result = run(
                code, heldout_screen, world.model_dump(), settings, seed, str(cache_dir), condition.extra_label_noise, timeout=timeout
            )
        except Exception as error:  # a sandbox failure on held-out data is a failure of the loss there
            return code, condition.name, seed, None, f"{condition.name} seed {seed}: {error}"
        if result["fitness"] is None:
            return code, condition.name, seed, None, f"{condition.name} seed {seed}: {result['degenerate']}"
        return code, condition.name, seed, float(result["fitness"]), None

    values: dict[tuple[str, str, int], float | None] = {}
    errors: dict[str, list[str]] = {code: [] for code in unique}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done, (code, name, seed, fitness, error) in enumerate(pool.map(one, work), 1):
            values[(code, name, seed)] = fitness
            if error:
                errors[code].append(error)
            if progress:
                progress(f"held-out {done}/{len(work)}: {unique[code]} {name} seed {seed}: {fitness}")
    out: dict[str, LossHeldOut] = {}
    for label, code in losses.items():
        fitness = {c.name: [values[(code, c.name, seed)] for seed in config.seeds] for c in config.conditions}
        out[label] = summarise(label, fitness, errors[code])
    conditions = [
        {
            "name": c.name,
            "screen": condition_screen(base_screen, c, config.eval_samples).model_dump(),
            "extra_label_noise": c.extra_label_noise,
            "label_noise": total_label_noise(world.label_noise, c.extra_label_noise),
        }
        for c in config.conditions
    ]
    return HeldOutResult(
        seeds=list(config.seeds),
        conditions=conditions,
        losses=out,
        timing={"seconds": round(time.perf_counter() - started, 2), "screens": len(work)},
    )
