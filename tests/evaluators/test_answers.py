"""Answer generation with transformers on a tiny random llama and a word-level tokenizer built in code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lossforge.evaluators.answers import GenerationSettings, generate_answers, read_answers, write_answers
from lossforge.evaluators.questions import Question

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"] + (
    "what is a good loss for preference pairs and why now explain it again shorter please yes no the of"
).split()
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
QUESTIONS = [
    Question(id="1", category="writing", turns=["what is a good loss", "explain it again shorter please"]),
    Question(id="2", category="stem", turns=["why preference pairs"]),
    Question(id="3", category="math", turns=["what is the loss of pairs and why", "now shorter"]),
]


@pytest.fixture(scope="module")
def tiny() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="<s>", eos_token="</s>", chat_template=TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_every_turn_is_answered_in_order_with_the_previous_answer_in_context(tiny) -> None:
    model, tokenizer = tiny
    prompts: list[str] = []
    original = model.generate

    def recording_generate(**kwargs):
        prompts.extend(tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=False))
        return original(**kwargs)

    model.generate = recording_generate
    try:
        answers = generate_answers(model, tokenizer, QUESTIONS, GenerationSettings(max_new_tokens=6, batch_size=2))
    finally:
        del model.generate
    assert list(answers) == ["1", "2", "3"] and [len(a) for a in answers.values()] == [2, 1, 2]
    assert tokenizer.padding_side == "right"  # restored
    assert len(prompts) == 5
    second_turn = next(p for p in prompts if "shorter please" in p)
    first_answer = answers["1"][0]
    expected = f"<|user|> what is a good loss </s> <|assistant|> {first_answer} </s> <|user|> explain it again shorter please"
    assert " ".join(expected.split()) in " ".join(second_turn.replace("[PAD]", "").split())
    assert second_turn.rstrip().endswith("<|assistant|>")


def test_greedy_answers_do_not_depend_on_the_batching(tiny) -> None:
    model, tokenizer = tiny
    one = generate_answers(model, tokenizer, QUESTIONS, GenerationSettings(max_new_tokens=6, batch_size=1))
    three = generate_answers(model, tokenizer, QUESTIONS, GenerationSettings(max_new_tokens=6, batch_size=3))
    assert one == three
    assert all(answer for turns in one.values() for answer in turns)  # the model does say something


def test_sampling_is_seeded(tiny) -> None:
    model, tokenizer = tiny
    settings = GenerationSettings(max_new_tokens=6, temperature=1.0, seed=3)
    sampled = generate_answers(model, tokenizer, QUESTIONS, settings)
    assert sampled == generate_answers(model, tokenizer, QUESTIONS, settings)
    assert sampled != generate_answers(model, tokenizer, QUESTIONS, GenerationSettings(max_new_tokens=6))


def test_a_tokenizer_without_a_chat_template_is_refused(tiny) -> None:
    model, tokenizer = tiny
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="[PAD]", eos_token="</s>")
    with pytest.raises(ValueError, match="chat template"):
        generate_answers(model, bare, QUESTIONS)


def test_answers_round_trip_through_fastchat_files(tmp_path: Path) -> None:
    answers = {"81": ["first", "second"], "abc": ["only"]}
    write_answers(tmp_path / "model_answer" / "mine.jsonl", answers, model_id="mine")
    assert read_answers(tmp_path / "model_answer" / "mine.jsonl") == answers
