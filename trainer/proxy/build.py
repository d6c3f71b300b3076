"""Building the proxy world once per seed: SFT reference, preference pairs, reference log-probs; cached.

`load_task(config, seed, cache_dir)` returns the `ProxyTask` of that seed. The first call builds it
(the "SFT" stage trains the tiny transformer on text from the Markov chain, so the reference is a real
learned distribution; pairs are sampled from that reference and labelled by Bradley-Terry on the hidden
reward, with label noise) and writes one file, `proxy-<key>.pt`, under a file lock; every later call,
in any process, loads that file. The key hashes the world settings and the seed, so a change of
settings never reads a stale world. Loading uses `torch.load(weights_only=True)`: the cache holds
tensors and plain values only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock

from lossforge.settings.proxy import WorldConfig
from lossforge.trainer.proxy.model import build_model, completion_logits, completion_logps, sample_completions
from lossforge.trainer.proxy.world import BOS, World, read_gain_units, seeded_world

CACHE_FORMAT = 1


@dataclass
class ProxyTask:
    """Everything a candidate's screen needs, identical for every candidate of a seed."""

    config: WorldConfig
    seed: int
    world: World
    reference_state: dict[str, torch.Tensor]
    train_prompts: torch.Tensor  # (N, P)
    chosen: torch.Tensor  # (N, C)
    rejected: torch.Tensor  # (N, C)
    reference_chosen_logps: torch.Tensor  # (N,)
    reference_rejected_logps: torch.Tensor  # (N,)
    eval_prompts: torch.Tensor  # (M, P)
    reference_reward: float  # mean read reward (``world.read_gain_units``) of reference samples on the eval prompts
    stats: dict[str, float] = field(default_factory=dict)

    def reference_model(self) -> torch.nn.Module:
        """A fresh copy of the frozen SFT reference."""
        model = build_model(self.config, self.seed)
        model.load_state_dict(self.reference_state)
        model.eval()
        return model


def _sft(config: WorldConfig, world: World, seed: int, generator: torch.Generator) -> tuple[torch.nn.Module, float]:
    """Train the reference on sequences of the chain by next-token prediction; return it and its last loss."""
    model = build_model(config, seed)
    length = config.prompt_len + config.completion_len - 1
    text = torch.cat(
        [torch.full((config.sft_sequences, 1), BOS, dtype=torch.long), world.sample(config.sft_sequences, length, generator)],
        dim=1,
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.sft_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.sft_lr, total_steps=config.sft_steps)
    model.train()
    loss_value = float("nan")
    for _ in range(config.sft_steps):
        index = torch.randint(0, config.sft_sequences, (config.sft_batch,), generator=generator)
        batch = text[index]
        logits = model(input_ids=batch).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = float(loss.detach())
    model.eval()
    return model, loss_value


def _chain_entropy_rate(world: World, config: WorldConfig) -> float:
    """Mean per-token cross-entropy of the chain itself: the floor the SFT loss can reach."""
    t = world.transition[1:, 1:]
    row_entropy = -(t * t.clamp_min(1e-12).log()).sum(dim=1)
    return float(row_entropy.mean())


def _labelling_reward(
    world: World, config: WorldConfig, seed: int, prompts: torch.Tensor, first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward that labels the pairs: the true one, or with ``reward_misspecification`` m > 0 the mix
    sqrt(1 - m^2) * true + m * the reward of an independent world (seed + 7919) of the same form."""
    true_first, true_second = world.reward(prompts, first), world.reward(prompts, second)
    m = config.reward_misspecification
    if m <= 0:
        return true_first, true_second
    other = seeded_world(config, seed + 7919)
    keep = (1.0 - m * m) ** 0.5
    return keep * true_first + m * other.reward(prompts, first), keep * true_second + m * other.reward(prompts, second)


def build_task(config: WorldConfig, seed: int) -> ProxyTask:
    """Build the world of `seed` from scratch (tens of seconds on 2 cores)."""
    started = time.perf_counter()
    world = seeded_world(config, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    reference, sft_loss = _sft(config, world, seed, generator)

    with torch.no_grad():
        prompts = world.sample_prompts(config.train_pairs, config.prompt_len, generator)
        first = sample_completions(reference, prompts, config.completion_len, generator)
        second = sample_completions(reference, prompts, config.completion_len, generator)
        reward_first, reward_second = _labelling_reward(world, config, seed, prompts, first, second)
        p_first = torch.sigmoid((reward_first - reward_second) / config.bt_temperature)
        first_wins = torch.rand(config.train_pairs, generator=generator) < p_first
        flip = torch.rand(config.train_pairs, generator=generator) < config.label_noise
        first_wins = first_wins ^ flip
        chosen = torch.where(first_wins.unsqueeze(1), first, second)
        rejected = torch.where(first_wins.unsqueeze(1), second, first)
        agreement = float(((world.reward(prompts, chosen) >= world.reward(prompts, rejected)).float()).mean())
        reference_chosen_logps = completion_logps(reference, prompts, chosen)
        reference_rejected_logps = completion_logps(reference, prompts, rejected)

        eval_prompts = world.sample_prompts(config.eval_prompts, config.prompt_len, generator)
        repeated = eval_prompts.repeat(config.reference_samples_per_prompt, 1)
        reference_samples = sample_completions(reference, repeated, config.completion_len, generator)
        reference_rewards = read_gain_units(config, world, repeated, reference_samples)
        # How far the SFT model is from the chain it imitates, in nats per token.
        logits = completion_logits(reference, repeated[:256], reference_samples[:256])
        model_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), reference_samples[:256].reshape(-1))

    return ProxyTask(
        config=config,
        seed=seed,
        world=world,
        reference_state={k: v.detach().clone() for k, v in reference.state_dict().items()},
        train_prompts=prompts,
        chosen=chosen,
        rejected=rejected,
        reference_chosen_logps=reference_chosen_logps,
        reference_rejected_logps=reference_rejected_logps,
        eval_prompts=eval_prompts,
        reference_reward=float(reference_rewards.mean()),
        stats={
            "sft_loss": sft_loss,
            "chain_entropy_rate": _chain_entropy_rate(world, config),
            "reference_nll_on_own_samples": float(model_nll),
            "label_agreement_with_true_reward": agreement,
            "reference_reward_std": float(reference_rewards.std()),
            "build_seconds": time.perf_counter() - started,
        },
    )


def _to_payload(task: ProxyTask) -> dict:
    w = task.world
    return {
        "format": CACHE_FORMAT,
        "config": task.config.model_dump(),
        "seed": task.seed,
        "world": {
            "transition": w.transition,
            "token_reward": w.token_reward,
            "bigram_reward": w.bigram_reward,
            "reward_mean": w.reward_mean,
            "reward_std": w.reward_std,
            "reward_unit": w.reward_unit,
        },
        "reference_state": task.reference_state,
        "train_prompts": task.train_prompts,
        "chosen": task.chosen,
        "rejected": task.rejected,
        "reference_chosen_logps": task.reference_chosen_logps,
        "reference_rejected_logps": task.reference_rejected_logps,
        "eval_prompts": task.eval_prompts,
        "reference_reward": task.reference_reward,
        "stats": task.stats,
    }


def _from_payload(payload: dict) -> ProxyTask:
    return ProxyTask(
        config=WorldConfig(**payload["config"]),
        seed=payload["seed"],
        world=World(**payload["world"]),
        reference_state=payload["reference_state"],
        train_prompts=payload["train_prompts"],
        chosen=payload["chosen"],
        rejected=payload["rejected"],
        reference_chosen_logps=payload["reference_chosen_logps"],
        reference_rejected_logps=payload["reference_rejected_logps"],
        eval_prompts=payload["eval_prompts"],
        reference_reward=payload["reference_reward"],
        stats=payload["stats"],
    )


def task_cache_path(config: WorldConfig, seed: int, cache_dir: Path) -> Path:
    """Where the world of `seed` is (or will be) cached."""
    return Path(cache_dir) / f"proxy-{config.cache_key(seed)}.pt"


def load_task(config: WorldConfig, seed: int, cache_dir: Path) -> ProxyTask:
    """The cached world of `seed`, built and written first if absent (safe across processes)."""
    path = task_cache_path(config, seed, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                task = build_task(config, seed)
                tmp = path.with_suffix(".tmp")
                torch.save(_to_payload(task), tmp)
                tmp.replace(path)
                return task
    payload = torch.load(path, weights_only=True)
    if payload.get("format") != CACHE_FORMAT:
        path.unlink(missing_ok=True)
        return load_task(config, seed, cache_dir)
    return _from_payload(payload)
