"""Answer generation with transformers on a tiny random llama and a word-level tokenizer built in code;
answer files in FastChat's and Arena-Hard-Auto's layouts (the shipped baseline answers), and each Arena-Hard
category's baseline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lossforge.evaluators.answers import (
    ARENA_HARD_BASELINES,
    AnswerError,
    GenerationSettings,
    arena_hard_baselines,
    generate_answers,
    read_answers,
    write_answers,
)
from lossforge.evaluators.questions import Question, load_arena_hard

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repository
ARENA = DATA / "arena_hard"

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


# -- answer files in Arena-Hard-Auto's layouts -------------------------------------------------------------


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]  # not splitlines: prompts hold U+2028


def test_arena_hard_answers_in_the_current_layout_are_read() -> None:
    # before issue 14: every answer of this file read as empty (it has messages, no choices): "answers missing"
    file = ARENA / "v0.1" / "model_answer" / "gpt-4-0314.jsonl"
    answers = read_answers(file)
    rows = jsonl(file)
    assert len(answers) == 500 and all(len(turns) == 1 and turns[0].strip() for turns in answers.values())
    for row in rows[:: 50]:
        assert answers[row["uid"]] == [row["messages"][-1]["content"]["answer"]]
    assert answers[rows[0]["uid"]][0].startswith("To implement a SCIM (System for Cross-domain Identity Management)")
    head = read_answers(ARENA / "v2.0" / "model_answer" / "o3-mini-2025-01-31.head30.jsonl")
    assert len(head) == 30 and head["0253f09025cc40cd"][0].startswith("The correct answer is C.")


def test_reasoning_multi_turn_and_failed_answers_in_the_current_layout(tmp_path: Path) -> None:
    file = tmp_path / "m.jsonl"
    rows = [
        # a reasoning model's row (gen_answer.py writes {"thought", "answer"}): only the answer is judged
        {"uid": "r", "model": "m", "messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": {"thought": "hmm", "answer": "final"}}]},
        {"uid": "t", "model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
            {"role": "assistant", "content": {"answer": "a2"}}]},
        # a failed generation: no answer, so the question counts as unanswered
        {"uid": "n", "model": "m", "messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": {"answer": None}}]},
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_answers(file) == {"r": ["final"], "t": ["a1", "a2"], "n": []}


def test_the_older_arena_hard_layout_keeps_working(tmp_path: Path) -> None:
    # older Arena-Hard-Auto (2024): question_id, choices[0].turns[0].content
    rows = jsonl(ARENA / "v0.1" / "model_answer" / "gpt-4-0314.jsonl")[:5]
    old = tmp_path / "gpt-4-0314.jsonl"
    old.write_text("".join(json.dumps({"question_id": r["uid"], "answer_id": r["ans_id"], "model_id": "gpt-4-0314",
                                       "choices": [{"index": 0, "turns": [{"content": r["messages"][-1]["content"]["answer"],
                                                                            "token_len": 10}]}]}) + "\n" for r in rows))
    assert read_answers(old) == {r["uid"]: [r["messages"][-1]["content"]["answer"]] for r in rows}


def test_unreadable_answer_files_name_the_line_and_the_layouts(tmp_path: Path) -> None:
    file = tmp_path / "a.jsonl"
    with pytest.raises(AnswerError, match="does not exist"):
        read_answers(file)
    file.write_text('{"uid": "a", "messages": []}\nnot json\n')
    with pytest.raises(AnswerError, match=r"a.jsonl:2: not JSON"):
        read_answers(file)
    file.write_text('{"model": "m", "choices": [{"turns": ["x"]}]}\n')
    with pytest.raises(AnswerError, match=r"a.jsonl:1: an answer row needs a question_id \(FastChat\) or uid"):
        read_answers(file)
    file.write_text('{"uid": "a", "output": "x"}\n')
    with pytest.raises(AnswerError, match=r"a.jsonl:1: no answer in this row \(keys \['output', 'uid'\]\): expected "
                                          r"FastChat's choices\[0\].turns or Arena-Hard's messages"):
        read_answers(file)
    file.write_text("[1, 2]\n")
    with pytest.raises(AnswerError, match="expected a JSON object, got list"):
        read_answers(file)


# -- each category's baseline, as upstream's JUDGE_SETTINGS -------------------------------------------------


def test_the_baselines_are_upstreams() -> None:
    # lmarena/arena-hard-auto, utils/judge_utils.py, JUDGE_SETTINGS[category]["baseline"]
    assert ARENA_HARD_BASELINES == {"arena-hard-v0.1": "gpt-4-0314", "hard_prompt": "o3-mini-2025-01-31",
                                    "coding": "o3-mini-2025-01-31", "math": "o3-mini-2025-01-31",
                                    "creative_writing": "gemini-2.0-flash-001"}


def test_v01_questions_take_gpt_4_0314_from_the_version_folder() -> None:
    questions = load_arena_hard(ARENA / "v0.1")
    answers, models = arena_hard_baselines(questions, ARENA / "v0.1")
    assert models == {"arena-hard-v0.1": "gpt-4-0314"}
    assert answers == read_answers(ARENA / "v0.1" / "model_answer" / "gpt-4-0314.jsonl")
    # the question file itself names the same folder
    assert arena_hard_baselines(questions[:3], ARENA / "v0.1" / "question.jsonl")[0] == {q.id: answers[q.id] for q in questions[:3]}


def test_v20_categories_take_their_own_baselines(tmp_path: Path) -> None:
    questions = load_arena_hard(ARENA / "v2.0")
    # the shipped v2.0 folder has only a 30-row sample of o3-mini's answers, under another name: the error
    # says which file each category needs and what is there
    with pytest.raises(AnswerError, match=r"judges hard_prompt \(500 questions\) against o3-mini-2025-01-31, but "
                                          r".*v2.0/model_answer/o3-mini-2025-01-31.jsonl does not exist \(model_answer/ "
                                          r"holds o3-mini-2025-01-31.head30.jsonl\).*or give --baseline FILE"):
        arena_hard_baselines(questions, ARENA / "v2.0")
    folder = tmp_path / "arena-hard-v2.0"
    (folder / "model_answer").mkdir(parents=True)
    (folder / "model_answer" / "o3-mini-2025-01-31.jsonl").write_text(
        (ARENA / "v2.0" / "model_answer" / "o3-mini-2025-01-31.head30.jsonl").read_text())
    creative = [q for q in questions if q.category == "creative_writing"][:2]
    with pytest.raises(AnswerError, match=r"judges creative_writing \(2 questions\) against gemini-2.0-flash-001"):
        arena_hard_baselines(creative, folder)
    (folder / "model_answer" / "gemini-2.0-flash-001.jsonl").write_text("".join(
        json.dumps({"uid": q.id, "model": "gemini-2.0-flash-001", "messages": [
            {"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": {"answer": f"gemini on {q.id}"}}]}) + "\n"
        for q in creative))
    o3 = read_answers(folder / "model_answer" / "o3-mini-2025-01-31.jsonl")
    hard = [q for q in questions if q.id in o3][:3]
    answers, models = arena_hard_baselines(hard + creative, folder)
    assert models == {"creative_writing": "gemini-2.0-flash-001", "hard_prompt": "o3-mini-2025-01-31"}
    assert answers == {**{q.id: o3[q.id] for q in hard}, **{q.id: [f"gemini on {q.id}"] for q in creative}}


def test_a_category_without_an_upstream_baseline_is_refused() -> None:
    with pytest.raises(AnswerError, match=r"no Arena-Hard baseline for the question categories \['writing'\].*--baseline FILE"):
        arena_hard_baselines([Question(id="1", category="writing", turns=["q"])], ARENA / "v0.1")
