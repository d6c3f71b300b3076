"""The tiny causal transformer of the proxy and the three things done with it: log-probs, sampling, KL.

The model is a transformers GPT-2 built from a config with random initialisation (no download). Sequences
are `prompt + completion` with fixed lengths, so no padding is needed anywhere, which keeps every step a
single dense forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from lossforge.settings.proxy import WorldConfig


def build_model(config: WorldConfig, seed: int) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of the configured size, without dropout (deterministic training)."""
    gpt_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.prompt_len + config.completion_len,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        # The same tanh approximation as GPT-2's default "gelu_new", as one fused kernel: the Python
        # version was a quarter of a CPU screen's time at this size.
        activation_function="gelu_pytorch_tanh",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(gpt_config)
    return model


def completion_logits(model: torch.nn.Module, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """Logits that predict each completion token: shape (n, C, V)."""
    input_ids = torch.cat([prompts, completions], dim=1)
    logits = model(input_ids=input_ids).logits
    prompt_len = prompts.shape[1]
    return logits[:, prompt_len - 1 : -1]


def completion_logps(model: torch.nn.Module, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each completion given its prompt: shape (n,)."""
    logps = F.log_softmax(completion_logits(model, prompts, completions).float(), dim=-1)
    return logps.gather(-1, completions.unsqueeze(-1)).squeeze(-1).sum(dim=1)


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module, prompts: torch.Tensor, length: int, generator: torch.Generator
) -> torch.Tensor:
    """Sample one completion of `length` tokens per prompt at temperature 1 (ancestral sampling).

    With the key/value cache: each step feeds only the new token (the same distributions as a full
    forward over the prefix, up to float rounding).
    """
    tokens: list[torch.Tensor] = []
    output = model(input_ids=prompts, use_cache=True)
    for position in range(length):
        probs = torch.softmax(output.logits[:, -1].float(), dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        tokens.append(token)
        if position + 1 < length:
            output = model(input_ids=token, use_cache=True, **_cache_of(output))
    return torch.cat(tokens, dim=1)


def _cache_of(output: object) -> dict[str, object]:
    """The keyword that hands a forward's key/value cache to the next one (transformers 5.x renamed
    ``past_key_values`` to ``cache``; both spellings are in the supported range)."""
    if getattr(output, "cache", None) is not None:
        return {"cache": output.cache}
    return {"past_key_values": output.past_key_values}


@torch.no_grad()
def sequence_kl(
    policy: torch.nn.Module, reference: torch.nn.Module, prompts: torch.Tensor, completions: torch.Tensor
) -> torch.Tensor:
    """KL(policy || reference) of each completion sequence, from completions sampled from the policy.

    Per position it uses the exact KL between the two next-token distributions at the sampled prefix
    (a Rao-Blackwellised estimate of the sequence KL: unbiased, non-negative, lower variance than the
    log-ratio of the sampled tokens). Shape (n,).
    """
    policy_logps = F.log_softmax(completion_logits(policy, prompts, completions).float(), dim=-1)
    reference_logps = F.log_softmax(completion_logits(reference, prompts, completions).float(), dim=-1)
    per_position = (policy_logps.exp() * (policy_logps - reference_logps)).sum(dim=-1)
    return per_position.sum(dim=1)
