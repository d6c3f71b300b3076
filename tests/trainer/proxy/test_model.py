"""The proxy's model helpers: cached sampling draws exactly what a full forward per token would."""
from __future__ import annotations

import torch

from lossforge.settings.proxy import WorldConfig
from lossforge.trainer.proxy.model import build_model, sample_completions


def _sample_without_cache(model: torch.nn.Module, prompts: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    sequence = prompts
    for _ in range(length):
        probs = torch.softmax(model(input_ids=sequence).logits[:, -1].float(), dim=-1)
        sequence = torch.cat([sequence, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return sequence[:, prompts.shape[1] :]


def test_cached_sampling_equals_a_full_forward_per_token() -> None:
    config = WorldConfig()
    model = build_model(config, seed=5).eval()
    prompts = torch.randint(1, config.vocab_size, (64, config.prompt_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cached = sample_completions(model, prompts, config.completion_len, torch.Generator().manual_seed(9))
        full = _sample_without_cache(model, prompts, config.completion_len, torch.Generator().manual_seed(9))
    assert cached.shape == (64, config.completion_len)
    assert torch.equal(cached, full)
