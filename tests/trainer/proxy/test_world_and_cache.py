"""The proxy world: deterministic per seed, standardised reward, built once and cached on disk."""
from __future__ import annotations

import torch

from lossforge.trainer.proxy.build import load_task, task_cache_path
from lossforge.settings.proxy import WorldConfig
from lossforge.trainer.proxy.world import BOS, read_reward, seeded_world


def test_world_is_a_pure_function_of_the_seed() -> None:
    config = WorldConfig()
    a, b, c = seeded_world(config, 3), seeded_world(config, 3), seeded_world(config, 4)
    assert torch.equal(a.transition, b.transition) and torch.equal(a.bigram_reward, b.bigram_reward)
    assert not torch.equal(a.transition, c.transition)
    assert torch.allclose(a.transition.sum(dim=1), torch.ones(config.vocab_size))
    assert float(a.transition[:, BOS].sum()) == 0.0  # BOS is never emitted


def test_reward_is_standardised_under_the_chain() -> None:
    config = WorldConfig()
    world = seeded_world(config, 0)
    generator = torch.Generator().manual_seed(123)
    prompts = world.sample_prompts(4096, config.prompt_len, generator)
    completions = world.sample(4096, config.completion_len, generator, start=prompts[:, -1])
    reward = world.reward(prompts, completions)
    assert abs(float(reward.mean())) < 0.1
    assert abs(float(reward.std()) - 1.0) < 0.1


def test_task_is_built_once_and_reused(tiny_proxy, cache_dir) -> None:
    path = task_cache_path(tiny_proxy.world, 11, cache_dir)
    first = load_task(tiny_proxy.world, 11, cache_dir)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    second = load_task(tiny_proxy.world, 11, cache_dir)
    assert path.stat().st_mtime_ns == stamp  # read, not rebuilt
    assert torch.equal(first.chosen, second.chosen)
    assert torch.equal(first.reference_chosen_logps, second.reference_chosen_logps)
    for key, value in first.reference_state.items():
        assert torch.equal(value, second.reference_state[key])
    # the cached reference log-probs are those of the cached reference model
    from lossforge.trainer.proxy.model import completion_logps

    with torch.no_grad():
        recomputed = completion_logps(second.reference_model(), second.train_prompts[:16], second.chosen[:16])
    torch.testing.assert_close(recomputed, second.reference_chosen_logps[:16], rtol=1e-4, atol=1e-4)


def test_other_settings_or_seed_get_another_cache_file(tiny_proxy, cache_dir) -> None:
    other = tiny_proxy.world.model_copy(update={"label_noise": 0.2})
    assert task_cache_path(other, 11, cache_dir) != task_cache_path(tiny_proxy.world, 11, cache_dir)
    assert task_cache_path(tiny_proxy.world, 12, cache_dir) != task_cache_path(tiny_proxy.world, 11, cache_dir)


def test_preference_labels_follow_the_hidden_reward(tiny_proxy, cache_dir) -> None:
    # the default: near-deterministic labels, as a classifier labels the paper's IMDb pairs
    task = load_task(tiny_proxy.world, 11, cache_dir)
    assert task.stats["label_agreement_with_true_reward"] > 0.93
    # the noisy regime (Bradley-Terry at temperature 0.5 plus flipped labels): informative but noisy
    noisy = load_task(tiny_proxy.world.model_copy(update={"bt_temperature": 0.5, "label_noise": 0.1}), 11, cache_dir)
    assert 0.55 < noisy.stats["label_agreement_with_true_reward"] < 0.9


def test_a_misspecified_labelling_reward_agrees_less_with_the_true_one(tiny_proxy, cache_dir) -> None:
    base = load_task(tiny_proxy.world, 11, cache_dir)
    other = load_task(tiny_proxy.world.model_copy(update={"reward_misspecification": 0.8}), 11, cache_dir)
    # the same SFT reference (the labels change, nothing else)
    assert torch.allclose(other.reference_state["transformer.wte.weight"], base.reference_state["transformer.wte.weight"], atol=1e-4)
    assert other.stats["label_agreement_with_true_reward"] < base.stats["label_agreement_with_true_reward"] - 0.1


def test_the_true_reward_is_read_as_a_probability_in_chain_standard_deviations() -> None:
    config = WorldConfig()
    assert config.reward_reading == "sigmoid"  # the default: the paper's reward is P(positive)
    world = seeded_world(config, 0)
    generator = torch.Generator().manual_seed(123)
    prompts = world.sample_prompts(4096, config.prompt_len, generator)
    completions = world.sample(4096, config.completion_len, generator, start=prompts[:, -1])
    score = world.reward(prompts, completions)
    read = read_reward(config, score)
    assert float(read.min()) > 0.0 and float(read.max()) < 1.0
    # monotone in the score (the labels' order is the reading's order), and saturating at the top
    order = score.argsort()
    assert bool((read[order].diff() >= 0).all())
    assert abs(float(read.std()) / world.reward_unit - 1.0) < 0.1
    # "identity" reads the score itself, in its own unit: the numbers of the unbounded reward
    identity = config.model_copy(update={"reward_reading": "identity"})
    assert torch.equal(read_reward(identity, score), score)
    assert seeded_world(identity, 0).reward_unit == 1.0


def test_the_reading_is_part_of_the_cache_key() -> None:
    config = WorldConfig()
    for update in ({"reward_reading": "identity"}, {"reward_sigmoid_scale": 2.0}, {"reward_sigmoid_center": 0.0}):
        assert config.model_copy(update=update).cache_key(0) != config.cache_key(0)
