"""Settings of the CPU proxy task, validated by pydantic.

The settings fall in two groups. The *world* (language, reward, reference model, SFT, preference pairs)
is built once per seed and cached on disk, so its fields make up the cache key. The *screen* (how a
candidate is trained and evaluated: beta, steps, learning rate, KL budget) is applied per candidate and
is not part of the cache key, so changing it never rebuilds the world.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lossforge.settings.base import Strict


class WorldConfig(Strict):
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
    bt_temperature: float = Field(
        0.05,
        gt=0,
        description=(
            "Bradley-Terry temperature on the standardised reward; small values give near-deterministic "
            "preferences (a classifier's labels, as in the paper's IMDb pairs), where DPO drives margins without bound."
        ),
    )
    label_noise: float = Field(0.0, ge=0, lt=0.5, description="Probability that a preference label is flipped.")
    reward_misspecification: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "How far the reward that labels the pairs differs from the true one (0: the same). Labels are drawn "
            "from sqrt(1 - m^2) * true + m * an independent reward of the same form; fitness still reads the true "
            "reward, so a loss that over-optimises the labelling reward pays for it (Gao et al. 2023)."
        ),
    )

    reward_reading: Literal["sigmoid", "identity"] = Field(
        "sigmoid",
        description=(
            "How the true reward is read when a policy is evaluated. 'sigmoid': as a probability, "
            "sigmoid(reward_sigmoid_scale * (z - reward_sigmoid_center)) of the standardised score z, as the "
            "paper's reward is a sentiment classifier's P(positive), which saturates near 0.97 after training; "
            "'identity': z itself (unbounded). Labels always come from z (the classifier's order)."
        ),
    )
    reward_sigmoid_scale: float = Field(1.5, gt=0, le=20, description="Slope of the sigmoid reading, per standard deviation of z.")
    reward_sigmoid_center: float = Field(
        -1.75, ge=-10, le=10, description="Where the sigmoid reading is 0.5, in standard deviations of z (calibrated with `lossforge bench fidelity`)."
    )

    def cache_key(self, seed: int) -> str:
        """A short stable hash of these settings and the seed: the name of the world's cache file.

        ``v`` is the version of the build code: bumped whenever a build would give different numbers
        (v2: the fused GELU kernel, equal to v1's up to float rounding; v3: the labelling reward may differ
        from the true one, ``reward_misspecification``; v4: the reference's reward is read through
        ``reward_reading`` and its unit is stored).
        """
        blob = json.dumps({"world": self.model_dump(), "seed": seed, "v": 4}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScreenConfig(Strict):
    """How one candidate is trained from the reference and evaluated."""

    beta: float = Field(0.05, gt=0, le=10, description="The loss's beta (the DiscoPOP paper's 0.05 by default).")
    steps: int = Field(96, ge=1, description="Optimiser steps of preference training.")
    batch_pairs: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    checkpoints: int = Field(8, ge=1, le=32, description="Evaluations along training (the reward-KL path the frontier is fitted to).")
    eval_samples: int = Field(1024, ge=32, description="Policy samples per evaluation.")
    kl_budget: float = Field(0.4, gt=0, description="KL(policy||reference) in nats at which the fitted frontier is read.")
    logp_scale: float = Field(
        20.0,
        gt=0,
        le=100,
        description=(
            "Multiplies the summed log-probs (policy and reference, so every margin) before the loss sees them: "
            "the proxy's 12-token completions stand for an LLM's longer ones, whose log-ratios are sums over "
            "many more tokens (calibrated with `lossforge bench fidelity`)."
        ),
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description=(
            "Learning-rate schedule of preference training after a linear warm-up over warmup_ratio of the "
            "steps: 'constant' (HF Trainer's `constant_with_warmup`; with no warm-up, its `constant`) or "
            "'cosine' (decay towards 0: HF Trainer's `cosine`, as in the DiscoPOP paper's IMDb recipe)."
        ),
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the steps spent warming the learning rate up from 0 (both schedules).")
    final_accuracy: bool = Field(
        True,
        description=(
            "Measure the implicit-reward accuracy and margin over all training pairs at the end of a screen "
            "(reported with the result; the fitness does not use them; about 13% of a short screen's time)."
        ),
    )
    threads: int = Field(2, ge=1, le=64, description="torch threads for one screen.")


def _scaled(field: str, base: Any, value: Any) -> Any:
    """`value`, or `base` times k when `value` is the string "<k>x" (e.g. beta "2x")."""
    if not (isinstance(value, str) and value.endswith("x")):
        return value
    try:
        factor = float(value[:-1])
    except ValueError:
        raise ValueError(f"{field} = {value!r}: a relative value is a number followed by x, e.g. '2x'") from None
    if not isinstance(base, (int, float)) or isinstance(base, bool):
        raise ValueError(f"{field} = {value!r}: only numeric fields can be scaled")
    return int(round(base * factor)) if isinstance(base, int) else float(f"{base * factor:.12g}")  # 0.1 * 3 -> 0.3


def unknown_screen_fields(overrides: dict[str, Any]) -> list[str]:
    """The keys of `overrides` that are not `ScreenConfig` fields, sorted."""
    return sorted(set(overrides) - set(ScreenConfig.model_fields))


def apply_overrides(base: ScreenConfig, overrides: dict[str, Any]) -> ScreenConfig:
    """`base` with `overrides` applied and validated; a value "<k>x" multiplies the base's (beta "2x",
    steps "2x"), so a setting stays relative to whatever the base screen is."""
    unknown = unknown_screen_fields(overrides)
    if unknown:
        raise ValueError(f"unknown [proxy.screen] fields {unknown}")
    data = base.model_dump()
    data.update({key: _scaled(key, data[key], value) for key, value in overrides.items()})
    return ScreenConfig(**data)


class FitnessConfig(Strict):
    """How the search's fitness is read from one or more screens of a candidate.

    With no ``variants`` the fitness is the one screen's (``[proxy.screen]``). Each variant is a set of
    overrides of ``[proxy.screen]`` (e.g. ``{beta = 0.2}``, or ``{beta = "2x"}`` relative to the screen's),
    screened in addition on the same world, and the fitness is the ``aggregate`` of all readings:
    ``min`` (the worst case: a loss must work at every setting) or ``mean``. A reading that turns
    degenerate or fails counts as 0 (the reference: its policy would be thrown away), as on held-out
    settings.

    ``lazy_top_k`` (``min`` only) saves the variants' screens for candidates that cannot reach the top
    k: when the first reading is already below the archive's k-th best fitness, the minimum over all
    readings is too, so the variants are skipped and the first reading (an upper bound) is recorded. The
    top k is exact: a skipped candidate's upper bound is below the k-th best when it is recorded, and
    the k-th best only rises.
    """

    variants: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"beta": "2x"}],
        description="Overrides of [proxy.screen], each screened in addition ({beta = \"2x\"}: twice the screen's beta; [] for one screen).",
    )
    aggregate: Literal["min", "mean"] = Field("min", description="How the readings combine: worst case or mean.")
    lazy_top_k: int = Field(
        8, ge=0, description="Screen the variants only for candidates whose first reading can reach the top k (min only; 0: always)."
    )

    @field_validator("variants")
    @classmethod
    def _known_fields(cls, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, variant in enumerate(variants):
            unknown = unknown_screen_fields(variant)
            if unknown:
                raise ValueError(f"variant {index + 1} {variant}: unknown [proxy.screen] fields {unknown}")
            if not variant:
                raise ValueError(f"variant {index + 1} is empty: give at least one [proxy.screen] field to change")
        return variants

    def settings(self, screen: ScreenConfig) -> list[ScreenConfig]:
        """The screen settings of every reading: `screen` itself first, then each variant applied to it."""
        return [screen, *(apply_overrides(screen, variant) for variant in self.variants)]

    @property
    def lazy_k(self) -> int | None:
        """The k of lazy evaluation when it applies (variants, ``min``, ``lazy_top_k`` above 0), else None."""
        return self.lazy_top_k if self.variants and self.aggregate == "min" and self.lazy_top_k else None

    def combine(self, readings: list[float]) -> float:
        """The fitness of `readings` (one per setting, a failed reading given as 0)."""
        return min(readings) if self.aggregate == "min" else sum(readings) / len(readings)

    def combine_stderr(self, readings: list[float], stderrs: list[float]) -> float:
        """The standard error of `combine(readings)`: the lowest reading's (``min``; the first on a tie),
        or that of the mean of independent readings (``mean``)."""
        if self.aggregate == "min":
            return stderrs[readings.index(min(readings))]
        return sum(se * se for se in stderrs) ** 0.5 / len(stderrs)


class ProxyConfig(Strict):
    """The whole proxy: the world (cached per seed), the screen (per candidate) and how its fitness is read."""

    world: WorldConfig = WorldConfig()
    screen: ScreenConfig = ScreenConfig()
    fitness: FitnessConfig = FitnessConfig()

    @model_validator(mode="after")
    def _variants_are_valid_screens(self) -> "ProxyConfig":
        for index, variant in enumerate(self.fitness.variants):
            try:
                apply_overrides(self.screen, variant)
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                raise ValueError(f"[proxy.fitness] variant {index + 1} {variant} is not a valid screen: {problems}") from None
            except ValueError as error:
                raise ValueError(f"[proxy.fitness] variant {index + 1} {variant}: {error}") from None
        return self
