"""Screening one candidate loss on the proxy: train the reference with it, then measure reward and KL.

`screen(loss_fn, task, settings)` trains a copy of the SFT reference with the candidate loss on the
task's preference pairs (Adam, gradient clipping at 1.0 as in HF Trainer's default, the learning rate
on ``settings.lr_schedule``) and, at evenly spaced
checkpoints, samples completions for held-out prompts to measure the mean hidden reward and
KL(policy || reference). Sampling uses the same random streams for every candidate (common random
numbers), so differences between candidates are not sampling noise.

The loss sees the summed log-probs (policy and reference) times ``settings.logp_scale``: the proxy's
short completions stand for an LLM's longer ones (calibrated with `lossforge bench fidelity`).

Fitness (documented in the README; `lossforge.trainer.proxy.fitness`): the *reward gain at a matched
KL*. Along training the policy traces a path in the (KL, reward gain) plane that starts at the
reference, (0, 0); the dense path is read where it first reaches the KL budget (its last checkpoint if
it never does), and ``fitness_stderr`` is that reading's standard error from evaluation sampling.
Reward gain is measured in standard deviations of the read reward under the chain (``world.read_gain_units``:
by default a probability, as the paper's classifier reward is). A loss that does not move the
policy scores about 0; a loss that moves it the wrong way scores below 0. A loss whose values become
non-finite during training is degenerate: it gets no fitness and the reason is reported.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from pydantic import BaseModel

from lossforge.trainer.proxy.build import ProxyTask
from lossforge.settings.proxy import ScreenConfig
from lossforge.trainer.proxy.fitness import frontier_reading, sampling_stderr
from lossforge.trainer.proxy.model import completion_logps, sample_completions, sequence_kl
from lossforge.trainer.proxy.world import read_gain_units

LossFn = Callable[..., torch.Tensor]
_ACCURACY_CHUNK = 256  # pairs per forward pass of the final accuracy measurement


class PathPoint(BaseModel):
    """One checkpoint of training: its step, KL to the reference and reward gain (with their standard
    errors over the evaluation samples)."""

    step: int
    kl: float
    reward_gain: float
    train_loss: float
    kl_stderr: float = 0.0
    reward_gain_stderr: float = 0.0


class ScreenResult(BaseModel):
    """The outcome of screening one loss at one beta on one seed."""

    fitness: float | None
    fitness_stderr: float | None = None  # standard error of the fitness from evaluation sampling
    degenerate: str | None = None
    beta: float
    seed: int
    kl_budget: float
    path: list[PathPoint]
    final_kl: float | None = None
    final_reward_gain: float | None = None
    preference_accuracy: float | None = None  # implicit-reward accuracy on the training pairs at the end
    margin_mean: float | None = None  # mean margin (nats) on the training pairs at the end
    margin_std: float | None = None  # its spread over the pairs (nats)
    seconds: float = 0.0


def _policy_logps(policy: torch.nn.Module, prompts: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor):
    both = completion_logps(policy, torch.cat([prompts, prompts]), torch.cat([chosen, rejected]))
    return both.chunk(2)


def _evaluate(task: ProxyTask, policy: torch.nn.Module, reference: torch.nn.Module, settings: ScreenConfig, index: int):
    """Mean read-reward gain and mean KL of policy samples on the eval prompts (common random numbers)."""
    generator = torch.Generator().manual_seed(task.seed * 1000 + index)
    prompts = task.eval_prompts
    if settings.eval_samples != len(prompts):
        reps = math.ceil(settings.eval_samples / len(prompts))
        prompts = prompts.repeat(reps, 1)[: settings.eval_samples]
    policy.eval()
    with torch.no_grad():
        completions = sample_completions(policy, prompts, task.config.completion_len, generator)
        reward = read_gain_units(task.config, task.world, prompts, completions)
        kl = sequence_kl(policy, reference, prompts, completions)
    policy.train()
    root_n = math.sqrt(len(prompts))
    return float(kl.mean()), float(reward.mean()) - task.reference_reward, float(kl.std()) / root_n, float(reward.std()) / root_n


def lr_factor(step: int, steps: int, schedule: str, warmup_ratio: float) -> float:
    """The learning-rate multiplier before optimiser step `step` (0-based) of `steps`.

    Linear warm-up from 0 over ``ceil(warmup_ratio * steps)`` steps, then 1 (``constant``) or a cosine
    decay towards 0 (``cosine``; 0 would be step `steps`, after the last one): the formulas of
    transformers' ``get_constant_schedule_with_warmup`` and ``get_cosine_schedule_with_warmup``
    (num_cycles 0.5), i.e. HF Trainer's ``lr_scheduler_type`` "constant_with_warmup" (HF's "constant"
    ignores warm-up; here warmup_ratio 0 gives it) and "cosine". Unitless, in [0, 1]. Raises ValueError
    for another schedule.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {schedule!r}: 'constant' or 'cosine'")
    warmup = math.ceil(warmup_ratio * steps)
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    return sorted({max(1, round(steps * (i + 1) / checkpoints)) for i in range(checkpoints)})


def screen(
    loss_fn: LossFn,
    task: ProxyTask,
    settings: ScreenConfig,
    progress: Callable[[int, int], None] | None = None,
) -> ScreenResult:
    """Train the reference with `loss_fn` and read its fitness (see the module docstring)."""
    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(task.seed)
    reference = task.reference_model()
    policy = copy.deepcopy(reference)
    policy.train()
    optimiser = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, settings.steps, settings.lr_schedule, settings.warmup_ratio)
    )
    generator = torch.Generator().manual_seed(task.seed + 7)
    n_pairs = len(task.chosen)
    order = torch.randperm(n_pairs, generator=generator)
    cursor = 0
    evaluate_at = _checkpoint_steps(settings.steps, settings.checkpoints)
    path: list[PathPoint] = []
    result = dict(beta=settings.beta, seed=task.seed, kl_budget=settings.kl_budget)
    for step in range(1, settings.steps + 1):
        if cursor + settings.batch_pairs > n_pairs:
            order, cursor = torch.randperm(n_pairs, generator=generator), 0
        index = order[cursor : cursor + settings.batch_pairs]
        cursor += settings.batch_pairs
        chosen_logps, rejected_logps = _policy_logps(policy, task.train_prompts[index], task.chosen[index], task.rejected[index])
        scale = settings.logp_scale
        losses = loss_fn(
            chosen_logps * scale,
            rejected_logps * scale,
            task.reference_chosen_logps[index] * scale,
            task.reference_rejected_logps[index] * scale,
            settings.beta,
        )
        if not isinstance(losses, torch.Tensor) or losses.shape != (len(index),):
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            return ScreenResult(fitness=None, degenerate=f"loss returned {shape}, expected ({len(index)},)", path=path, **result)
        loss = losses.float().mean()
        if not torch.isfinite(loss):
            return ScreenResult(fitness=None, degenerate=f"non-finite loss at step {step}", path=path, **result)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        if not torch.isfinite(grad_norm):
            return ScreenResult(fitness=None, degenerate=f"non-finite gradient at step {step}", path=path, **result)
        optimiser.step()
        scheduler.step()
        if step in evaluate_at:
            kl, gain, kl_stderr, gain_stderr = _evaluate(task, policy, reference, settings, len(path))
            if not (math.isfinite(kl) and math.isfinite(gain)):
                return ScreenResult(fitness=None, degenerate=f"non-finite evaluation at step {step}", path=path, **result)
            path.append(
                PathPoint(
                    step=step, kl=kl, reward_gain=gain, train_loss=float(loss.detach()),
                    kl_stderr=kl_stderr, reward_gain_stderr=gain_stderr,
                )
            )
        if progress is not None:
            progress(step, settings.steps)
    accuracy = margin_mean = margin_std = None
    if settings.final_accuracy:
        accuracy, margin_mean, margin_std = _final_margins(task, policy)
    points = [(p.kl, p.reward_gain) for p in path]
    return ScreenResult(
        fitness=frontier_reading(points, settings.kl_budget),
        fitness_stderr=sampling_stderr(points, [(p.kl_stderr, p.reward_gain_stderr) for p in path], settings.kl_budget, seed=task.seed),
        path=path,
        final_kl=path[-1].kl,
        final_reward_gain=path[-1].reward_gain,
        preference_accuracy=accuracy,
        margin_mean=margin_mean,
        margin_std=margin_std,
        seconds=time.perf_counter() - started,
        **result,
    )


def _final_margins(task: ProxyTask, policy: torch.nn.Module) -> tuple[float, float, float]:
    """(implicit-reward accuracy, mean margin, its spread over the pairs) of `policy` on all training pairs;
    margins in nats (before ``logp_scale``)."""
    n_pairs = len(task.chosen)
    with torch.no_grad():
        # In chunks: one forward over all pairs at once is about 3x slower on CPU (cache misses).
        parts = [
            _policy_logps(policy, task.train_prompts[i : i + _ACCURACY_CHUNK], task.chosen[i : i + _ACCURACY_CHUNK], task.rejected[i : i + _ACCURACY_CHUNK])
            for i in range(0, n_pairs, _ACCURACY_CHUNK)
        ]
        chosen_logps = torch.cat([c for c, _ in parts])
        rejected_logps = torch.cat([r for _, r in parts])
        margin = (chosen_logps - task.reference_chosen_logps) - (rejected_logps - task.reference_rejected_logps)
        return float((margin > 0).float().mean()), float(margin.mean()), float(margin.std())
