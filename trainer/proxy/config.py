"""Settings of the CPU proxy task, validated by pydantic.

The settings fall in two groups. The *world* (language, reward, reference model, SFT, preference pairs)
is built once per seed and cached on disk, so its fields make up the cache key. The *screen* (how a
candidate is trained and evaluated: beta, steps, learning rate, KL budget) is applied per candidate and
is not part of the cache key, so changing it never rebuilds the world.
"""
from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldConfig(_Strict):
    """The synthetic language, its hidden reward and the preference data drawn from the reference."""

    vocab_size: int = Field(32, ge=8, le=512, description="Tokens in the language, BOS included.")
    prompt_len: int = Field(4, ge=1, le=32)
    completion_len: int = Field(12, ge=2, le=64)
    chain_concentration: float = Field(
        0.3, gt=0, description="Dirichlet concentration of the Markov chain's rows (lower: more peaked)."
    )
    bigram_reward_density: float = Field(0.1, ge=0, le=1, description="Share of bigrams carrying a reward term.")
    n_layer: int = Field(2, ge=1, le=8)
    n_embd: int = Field(64, ge=16, le=512)
    n_head: int = Field(4, ge=1, le=16)
    sft_sequences: int = Field(16384, ge=256)
    sft_steps: int = Field(400, ge=10)
    sft_batch: int = Field(256, ge=8)
    sft_lr: float = Field(3e-3, gt=0)
    train_pairs: int = Field(2048, ge=64)
    eval_prompts: int = Field(1024, ge=64)
    reference_samples_per_prompt: int = Field(4, ge=1, description="Samples per eval prompt for the reference's reward.")
    bt_temperature: float = Field(0.5, gt=0, description="Bradley-Terry temperature on the standardised reward.")
    label_noise: float = Field(0.1, ge=0, lt=0.5, description="Probability that a preference label is flipped.")

    def cache_key(self, seed: int) -> str:
        """A short stable hash of these settings and the seed: the name of the world's cache file.

        ``v`` is the version of the build code: bumped whenever a build would give different numbers
        (v2: the fused GELU kernel, equal to v1's up to float rounding).
        """
        blob = json.dumps({"world": self.model_dump(), "seed": seed, "v": 2}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScreenConfig(_Strict):
    """How one candidate is trained from the reference and evaluated."""

    beta: float = Field(0.1, gt=0, le=10)
    steps: int = Field(96, ge=1, description="Optimiser steps of preference training.")
    batch_pairs: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    checkpoints: int = Field(4, ge=1, le=32, description="Evaluations along training (the reward-KL path).")
    eval_samples: int = Field(1024, ge=32, description="Policy samples per evaluation.")
    kl_budget: float = Field(1.0, gt=0, description="KL(policy||reference) in nats at which fitness is read.")
    threads: int = Field(2, ge=1, le=64, description="torch threads for one screen.")


class ProxyConfig(_Strict):
    """The whole proxy: the world (cached per seed) and the screen (per candidate)."""

    world: WorldConfig = WorldConfig()
    screen: ScreenConfig = ScreenConfig()
