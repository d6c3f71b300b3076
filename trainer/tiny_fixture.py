"""A tiny causal LM, its tokenizer and a preference data set, written to disk like real ones.

Used by the tests and by ``bench_train`` of the TRL job: everything here is made in code (no hub
access), saved with ``save_pretrained`` and then loaded *by path*, so the job exercises exactly the code
path of a real model directory and a real JSONL preference file.

What it guarantees
------------------
* ``write_tiny_model(dir)`` writes a 2-layer Llama (hidden 32, vocab ~100) and a word-level
  ``PreTrainedTokenizerFast`` (``<pad>``, ``<unk>``, ``<s>``, ``</s>``) to ``dir``; deterministic in ``seed``.
* ``write_preference_jsonl(path, n)`` writes ``n`` rows ``{"prompt", "chosen", "rejected"}`` of words from
  that vocabulary; deterministic in ``seed``. Completions start with a space so that
  ``prompt + completion`` tokenizes to ``prompt`` tokens followed by completion tokens.

What it does not guarantee
--------------------------
* The model is random-init: nothing it says means anything. It is a plumbing fixture, not a benchmark of
  learning quality.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(96)]
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def make_tokenizer():
    """A word-level fast tokenizer over ``SPECIAL + WORDS`` (whitespace split)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        padding_side="left",
    )
    return tok


def write_tiny_model(out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a random-init tiny Llama and its tokenizer to ``out_dir``; returns the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def preference_rows(n: int = 32, seed: int = 0, prompt_len: tuple[int, int] = (3, 6),
                    completion_len: tuple[int, int] = (2, 8)) -> list[dict[str, str]]:
    """``n`` rows of random words: prompt, chosen, rejected (completions with a leading space)."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {"prompt": words(*prompt_len), "chosen": " " + words(*completion_len), "rejected": " " + words(*completion_len)}
        for _ in range(n)
    ]


def write_preference_jsonl(path: str | Path, n: int = 32, seed: int = 0, **kwargs) -> Path:
    """Write ``preference_rows(n, seed)`` to ``path`` as JSON lines; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(n, seed, **kwargs)))
    return p
