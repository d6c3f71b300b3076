"""Answers of a trained model to benchmark questions: transformers ``generate`` (batched) or vLLM.

``generate_answers(model, tokenizer, questions, settings)`` answers every turn of every question with
the tokenizer's chat template, turn by turn: turn 2 is asked with the model's own turn-1 answer in the
conversation, as MT-Bench does. It returns ``{question_id: [answer per turn]}``, what the judges in
``llm_judge`` take. ``generate_answers_vllm(model_path, ...)`` does the same with vLLM, and
``answer_questions(model_path, ...)`` picks vLLM when it is importable and asked for, transformers
otherwise. ``write_answers`` writes FastChat's ``model_answer/*.jsonl`` layout; ``read_answers`` reads it and
Arena-Hard-Auto's (both its current one and the older one). ``arena_hard_baselines(questions, path)`` picks
each Arena-Hard question's baseline answer as upstream does: by the question's category, from the version
folder's ``model_answer/<baseline model>.jsonl``.

What it guarantees
------------------
* Prompts are built only by ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; a
  tokenizer without a chat template is refused (``ValueError``), never silently formatted another way.
* Batches are left-padded (the padding side is restored afterwards), only the new tokens are decoded
  (special tokens skipped, surrounding whitespace stripped), and the output order is the questions'
  order whatever the batching.
* ``temperature == 0`` is greedy decoding and so deterministic; with sampling, ``torch.manual_seed(seed)``
  is set before each batch (this touches torch's global generator).

* ``read_answers`` gives every answer row's assistant turns, in order, in any of the layouts: FastChat
  (``question_id``, ``choices[0].turns`` as strings), older Arena-Hard (``choices[0].turns`` as
  ``{"content": ...}``) and current Arena-Hard (``uid``, ``messages`` whose assistant ``content`` is
  ``{"answer": ...}`` beside an optional ``"thought"``, or a plain string; only the answer is read, as
  upstream's gen_judgment.py reads ``messages[-1]["content"]["answer"]``). A row it cannot read raises
  ``AnswerError`` naming the file, the line and what it found. An answer that is null (a failed generation)
  is left out, so the question counts as unanswered.

It does not truncate prompts that exceed the model's context, and it does not stop on custom stop
strings: generation stops at the tokenizer's end-of-sequence token or ``max_new_tokens``.
"""
from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import Field

from lossforge.errors import UsageError
from lossforge.evaluators.questions import Question
from lossforge.settings.judge import GenerationSettings

__all__ = [
    "ARENA_HARD_BASELINES",
    "AnswerError",
    "arena_hard_baselines",
    "answer_questions",
    "generate_answers",
    "generate_answers_vllm",
    "read_answers",
    "vllm_available",
    "write_answers",
]

Answers = dict[str, list[str]]

#: The baseline model of each Arena-Hard question category, as upstream judges them: lmarena/arena-hard-auto,
#: utils/judge_utils.py, ``JUDGE_SETTINGS[category]["baseline"]`` (read by gen_judgment.py and show_result.py).
#: v0.1 judges every prompt against gpt-4-0314; v2.0 its hard prompts (and their coding and math
#: subcategories) against o3-mini-2025-01-31 and creative writing against gemini-2.0-flash-001.
ARENA_HARD_BASELINES: dict[str, str] = {
    "arena-hard-v0.1": "gpt-4-0314",
    "hard_prompt": "o3-mini-2025-01-31",
    "coding": "o3-mini-2025-01-31",
    "math": "o3-mini-2025-01-31",
    "creative_writing": "gemini-2.0-flash-001",
}


class AnswerError(UsageError):
    """An answer file (or the baseline answers a run needs) that cannot be read; the message says what to do."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _conversation(question: Question, answers: Sequence[str], turn: int, system: str | None) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for i in range(turn):
        messages.append({"role": "user", "content": question.turns[i]})
        if i < turn - 1:
            messages.append({"role": "assistant", "content": answers[i]})
    return messages


def _turns_to_ask(questions: Sequence[Question]) -> int:
    return max((len(q.turns) for q in questions), default=0)


def generate_answers(model: Any, tokenizer: Any, questions: Sequence[Question], settings: GenerationSettings | None = None) -> Answers:
    """Answers with transformers ``generate`` (see the module docstring)."""
    import torch

    settings = settings or GenerationSettings()
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; answers must be asked the way the model was tuned")
    answers: Answers = {q.id: [] for q in questions}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    sample = settings.temperature > 0
    try:
        for turn in range(1, _turns_to_ask(questions) + 1):
            asked = [q for q in questions if len(q.turns) >= turn]
            prompts = [
                tokenizer.apply_chat_template(
                    _conversation(q, answers[q.id], turn, settings.system_prompt), add_generation_prompt=True, tokenize=False
                )
                for q in asked
            ]
            order = sorted(range(len(asked)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
            texts: dict[int, str] = {}
            for start in range(0, len(order), settings.batch_size):
                chunk = order[start : start + settings.batch_size]
                batch = tokenizer([prompts[i] for i in chunk], padding=True, return_tensors="pt", add_special_tokens=False)
                batch = {k: v.to(device) for k, v in batch.items()}
                kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": pad_id, "do_sample": sample}
                if sample:
                    torch.manual_seed(settings.seed + start + 1000 * turn)
                    kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
                with torch.inference_mode():
                    output = model.generate(**batch, **kwargs)
                new = output[:, batch["input_ids"].shape[1] :]
                for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    texts[i] = text.strip()
            for i, q in enumerate(asked):
                answers[q.id].append(texts[i])
    finally:
        tokenizer.padding_side = old_side
    return answers


def generate_answers_vllm(model_path: str, questions: Sequence[Question], settings: GenerationSettings | None = None) -> Answers:  # pragma: no cover - needs vllm and a GPU
    """Answers with vLLM's chat API (only when ``vllm`` is importable)."""
    if not vllm_available():
        raise RuntimeError("vllm is not installed; use generate_answers (transformers) instead")
    from vllm import LLM, SamplingParams

    settings = settings or GenerationSettings()
    llm = LLM(model=model_path, seed=settings.seed)
    params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_new_tokens, seed=settings.seed)
    answers: Answers = {q.id: [] for q in questions}
    for turn in range(1, _turns_to_ask(questions) + 1):
        asked = [q for q in questions if len(q.turns) >= turn]
        conversations = [_conversation(q, answers[q.id], turn, settings.system_prompt) for q in asked]
        outputs = llm.chat(conversations, params, use_tqdm=False)
        for q, out in zip(asked, outputs):
            answers[q.id].append(out.outputs[0].text.strip())
    return answers


def answer_questions(
    model_path: str | Path,
    questions: Sequence[Question],
    settings: GenerationSettings | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
) -> Answers:  # pragma: no cover - loads a real model
    """Load a model from ``model_path`` and answer: vLLM when ``backend`` is "vllm" (or "auto" and vLLM
    is importable and a GPU is present), transformers otherwise."""
    import torch

    use_vllm = backend == "vllm" or (backend == "auto" and vllm_available() and torch.cuda.is_available())
    if use_vllm:
        return generate_answers_vllm(str(model_path), questions, settings)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    return generate_answers(model, tokenizer, questions, settings)


def write_answers(path: str | Path, answers: Mapping[str, Sequence[str]], model_id: str) -> None:
    """Write answers in FastChat's ``model_answer`` layout (one JSON object per question)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for qid, turns in answers.items():
            row = {
                "question_id": int(qid) if qid.isdigit() else qid,
                "answer_id": uuid.uuid4().hex,
                "model_id": model_id,
                "choices": [{"index": 0, "turns": list(turns)}],
                "tstamp": time.time(),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _turn_text(turn: Any) -> str | None:
    """The text of one answer turn: a string, ``{"content": str}`` (older Arena-Hard) or ``{"answer": str}``."""
    if isinstance(turn, str):
        return turn
    if isinstance(turn, dict):
        for key in ("answer", "content"):
            if isinstance(turn.get(key), str):
                return turn[key]
    return None


def _row_turns(row: dict[str, Any]) -> list[str | None]:
    """The assistant turns of one answer row (None for a turn without text); ValueError for an unknown layout."""
    if isinstance(row.get("messages"), list):
        return [_turn_text(m.get("content")) for m in row["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
    choices = row.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and isinstance(choices[0].get("turns"), list):
        return [_turn_text(t) for t in choices[0]["turns"]]
    raise ValueError(
        f"no answer in this row (keys {sorted(row)}): expected FastChat's choices[0].turns or Arena-Hard's "
        "messages (the assistant message's content as {\"answer\": ...} or a string)"
    )


def read_answers(path: str | Path) -> Answers:
    """Every question's answer turns from a ``model_answer`` jsonl file, in FastChat's or Arena-Hard-Auto's
    layout (see the module docstring). Keys are the rows' ``question_id`` or ``uid`` as strings; a later row
    for the same question replaces an earlier one (as upstream's load_model_answers does).

    Raises ``AnswerError`` for a missing file, a line that is not a JSON object, a row without an id or
    without answers in a known layout, each with the file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise AnswerError(f"answer file {path} does not exist")
    answers: Answers = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise AnswerError(f"{path}:{number}: not JSON ({error})") from error
            if not isinstance(row, dict):
                raise AnswerError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            ident = next((row[k] for k in ("question_id", "uid") if row.get(k) is not None), None)
            if ident is None:
                raise AnswerError(f"{path}:{number}: an answer row needs a question_id (FastChat) or uid (Arena-Hard); "
                                  f"got keys {sorted(row)}")
            try:
                turns = _row_turns(row)
            except ValueError as error:
                raise AnswerError(f"{path}:{number}: {error}") from error
            answers[str(ident)] = [t for t in turns if t is not None]
    return answers


def _answer_dir(questions_path: Path) -> Path:
    questions_path = Path(questions_path).expanduser()
    return (questions_path if questions_path.is_dir() else questions_path.parent) / "model_answer"


def arena_hard_baselines(questions: Sequence[Question], questions_path: str | Path) -> tuple[Answers, dict[str, str]]:
    """Each question's baseline answer, chosen as Arena-Hard-Auto chooses it: the model
    ``ARENA_HARD_BASELINES[question.category]``, read from ``model_answer/<model>.jsonl`` in the version folder
    of ``questions_path`` (the folder itself, or the folder of the question file). Returns the answers
    ({question id: [answer]}) and {category: baseline model} for the categories present.

    Raises ``AnswerError`` when a category has no upstream baseline, or a baseline's answer file is missing
    (naming the expected path, the questions that need it and the files there); the message says to give
    ``--baseline FILE`` (one answer file for every question) instead.
    """
    folder = _answer_dir(Path(questions_path))
    unknown = sorted({q.category for q in questions if q.category not in ARENA_HARD_BASELINES})
    if unknown:
        raise AnswerError(
            f"no Arena-Hard baseline for the question categories {unknown} (upstream's are "
            f"{', '.join(f'{c}: {m}' for c, m in ARENA_HARD_BASELINES.items())}): give --baseline FILE with the "
            "answers to compare against"
        )
    wanted: dict[str, list[Question]] = {}
    for q in questions:
        wanted.setdefault(ARENA_HARD_BASELINES[q.category], []).append(q)
    present = sorted(p.name for p in folder.glob("*.jsonl")) if folder.is_dir() else []
    answers: Answers = {}
    for model, asked in wanted.items():
        file = folder / f"{model}.jsonl"
        if not file.is_file():
            categories = sorted({q.category for q in asked})
            raise AnswerError(
                f"Arena-Hard judges {'/'.join(categories)} ({len(asked)} questions) against {model}, but {file} does "
                f"not exist ({'model_answer/ holds ' + ', '.join(present) if present else 'no answer files there'}). "
                f"Put {model}'s answers there (upstream publishes them with the questions), or give --baseline FILE "
                "to judge every question against one answer file"
            )
        mine = read_answers(file)
        answers.update({q.id: mine[q.id] for q in asked if q.id in mine})
    categories = {q.category: ARENA_HARD_BASELINES[q.category] for q in questions}
    return answers, dict(sorted(categories.items()))
