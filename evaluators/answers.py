"""Answers of a trained model to benchmark questions: transformers ``generate`` (batched) or vLLM.

``generate_answers(model, tokenizer, questions, settings)`` answers every turn of every question with
the tokenizer's chat template, turn by turn: turn 2 is asked with the model's own turn-1 answer in the
conversation, as MT-Bench does. It returns ``{question_id: [answer per turn]}``, what the judges in
``llm_judge`` take. ``generate_answers_vllm(model_path, ...)`` does the same with vLLM, and
``answer_questions(model_path, ...)`` picks vLLM when it is importable and asked for, transformers
otherwise. ``write_answers`` / ``read_answers`` use FastChat's ``model_answer/*.jsonl`` layout.

What it guarantees
------------------
* Prompts are built only by ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; a
  tokenizer without a chat template is refused (``ValueError``), never silently formatted another way.
* Batches are left-padded (the padding side is restored afterwards), only the new tokens are decoded
  (special tokens skipped, surrounding whitespace stripped), and the output order is the questions'
  order whatever the batching.
* ``temperature == 0`` is greedy decoding and so deterministic; with sampling, ``torch.manual_seed(seed)``
  is set before each batch (this touches torch's global generator).

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

from pydantic import BaseModel, ConfigDict, Field

from lossforge.evaluators.questions import Question

__all__ = [
    "GenerationSettings",
    "answer_questions",
    "generate_answers",
    "generate_answers_vllm",
    "read_answers",
    "vllm_available",
    "write_answers",
]

Answers = dict[str, list[str]]


class GenerationSettings(BaseModel):
    """How answers are sampled."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    system_prompt: str | None = None


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


def read_answers(path: str | Path) -> Answers:
    """Answers from a FastChat ``model_answer`` file (or Arena-Hard's, whose turns are ``{"content": ...}``)."""
    answers: Answers = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            qid = str(row.get("question_id", row.get("uid")))
            turns = (row.get("choices") or [{}])[0].get("turns", [])
            answers[qid] = [t["content"] if isinstance(t, dict) else str(t) for t in turns]
    return answers
