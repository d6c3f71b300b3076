"""The synthetic language and its hidden ground-truth reward.

The language is a first-order Markov chain over `vocab_size - 1` tokens (token 0 is BOS and is never
emitted) whose rows are drawn from a Dirichlet, so some continuations are much likelier than others, as
in natural text. The hidden reward of a completion is a sum of per-token and sparse bigram terms
(the bigram that joins prompt and completion included), standardised to mean 0 and standard deviation
1 under the chain (the score). It plays the part of the IMDb sentiment classifier in the DiscoPOP paper:
the policy never sees it, only preference labels drawn from it.

The paper's reward is a probability, P(positive), which saturates (0.94-0.975 after training): a policy
gains little by pushing an already positive completion further. ``read_reward`` reads the true reward the
same way when a policy is evaluated (``WorldConfig.reward_reading``: a sigmoid of the standardised score,
or the score itself), in units of its standard deviation under the chain (``World.reward_unit``), so
reward gains still read in standard deviations. Preference labels are drawn from the score itself (a
classifier's order of two completions is the order of its logits).

Everything is a pure function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lossforge.settings.proxy import WorldConfig

BOS = 0


@dataclass
class World:
    """The chain and the reward tables of one seed."""

    transition: torch.Tensor  # (V, V): row i = distribution of the token after i; column BOS is 0
    token_reward: torch.Tensor  # (V,)
    bigram_reward: torch.Tensor  # (V, V)
    reward_mean: float
    reward_std: float
    reward_unit: float = 1.0  # standard deviation of the read reward under the chain (1 for "identity")

    def raw_reward(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """Unstandardised reward of each completion given its prompt: shapes (n, P), (n, C) -> (n,)."""
        previous = torch.cat([prompts[:, -1:], completions[:, :-1]], dim=1)
        return self.token_reward[completions].sum(dim=1) + self.bigram_reward[previous, completions].sum(dim=1)

    def reward(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """The hidden reward, standardised under the chain."""
        return (self.raw_reward(prompts, completions) - self.reward_mean) / self.reward_std

    def sample(self, n: int, length: int, generator: torch.Generator, start: torch.Tensor | None = None) -> torch.Tensor:
        """Sample `n` continuations of `length` tokens from the chain, after `start` (default: BOS)."""
        previous = torch.full((n,), BOS, dtype=torch.long) if start is None else start.clone()
        out = torch.empty((n, length), dtype=torch.long)
        for t in range(length):
            previous = torch.multinomial(self.transition[previous], 1, generator=generator).squeeze(1)
            out[:, t] = previous
        return out

    def sample_prompts(self, n: int, prompt_len: int, generator: torch.Generator) -> torch.Tensor:
        """Prompts are BOS followed by `prompt_len - 1` tokens of the chain."""
        body = self.sample(n, prompt_len - 1, generator)
        return torch.cat([torch.full((n, 1), BOS, dtype=torch.long), body], dim=1)


def read_reward(config: WorldConfig, score: torch.Tensor) -> torch.Tensor:
    """The true reward as evaluation reads it, from the standardised score (``World.reward``), before
    dividing by ``World.reward_unit``: the score itself ("identity") or a probability ("sigmoid")."""
    if config.reward_reading == "identity":
        return score
    return torch.sigmoid(config.reward_sigmoid_scale * (score - config.reward_sigmoid_center))


def read_gain_units(config: WorldConfig, world: World, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """The true reward of each completion as evaluation reads it (``read_reward``), in units of its standard
    deviation under the chain (``World.reward_unit``): shapes (n, P), (n, C) -> (n,). Reward gains of the
    policy and the reference's level are both measured this way."""
    return read_reward(config, world.reward(prompts, completions)) / world.reward_unit


def build_world(config: WorldConfig, seed: int) -> World:
    """Draw the chain and the reward tables for `seed`, and standardise the reward under the chain."""
    generator = torch.Generator().manual_seed(seed)
    vocab = config.vocab_size
    concentration = torch.full((vocab - 1,), config.chain_concentration)
    rows = torch.distributions.Dirichlet(concentration).sample((vocab,))  # uses the global RNG; seeded below
    transition = torch.zeros(vocab, vocab)
    transition[:, 1:] = rows
    token_reward = torch.randn(vocab, generator=generator)
    token_reward[BOS] = 0.0
    mask = torch.rand(vocab, vocab, generator=generator) < config.bigram_reward_density
    bigram_reward = torch.randn(vocab, vocab, generator=generator) * mask
    world = World(transition, token_reward, bigram_reward, reward_mean=0.0, reward_std=1.0)
    prompts = world.sample_prompts(8192, config.prompt_len, generator)
    completions = world.sample(8192, config.completion_len, generator, start=prompts[:, -1])
    raw = world.raw_reward(prompts, completions)
    world.reward_mean = float(raw.mean())
    world.reward_std = float(raw.std().clamp_min(1e-6))
    if config.reward_reading != "identity":
        world.reward_unit = float(read_reward(config, world.reward(prompts, completions)).std().clamp_min(1e-6))
    return world


def seeded_world(config: WorldConfig, seed: int) -> World:
    """`build_world` with torch's global RNG pinned too (Dirichlet sampling has no generator argument)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_world(config, seed)
