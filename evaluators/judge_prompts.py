"""The LLM judge's prompts and the parsing of its verdicts.

Two protocols, written for this project after the published ones (MT-Bench's single-answer grading,
Zheng et al. 2023, arXiv:2306.05685; Arena-Hard-Auto's pairwise comparison, Li et al. 2024,
arXiv:2406.11939):

* single grading: the judge rates one answer 1-10 and ends with ``[[rating]]``; for a second turn it
  sees the whole conversation and rates the second answer; for math, reasoning and coding it is shown a
  reference answer.
* pairwise: the judge sees a prompt and two answers (A and B) and ends with one of ``[[A>>B]]``,
  ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``.

``PROMPT_VERSION`` is part of every cache key: change it whenever a prompt changes.

What it guarantees
------------------
* ``parse_rating`` returns a float in [1, 10] from the last ``[[x]]`` (else the last ``[x]``), or None.
* ``parse_verdict`` returns one of ``VERDICTS`` read by Arena-Hard-Auto's 2025 label rules (case-blind,
  ``[[label]]`` before the single-bracket ``[label]``, the last label counts, mirrored forms such as
  ``[[B<A]]`` normalised; ``winrate.verdict_label``), or None.
"""
from __future__ import annotations

import re

from lossforge.evaluators.questions import Question
from lossforge.evaluators.winrate import verdict_label

__all__ = ["PROMPT_VERSION", "VERDICTS", "pairwise_messages", "parse_rating", "parse_verdict", "single_messages"]

PROMPT_VERSION = "lossforge-judge-1"
VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")

_SINGLE_SYSTEM = """\
You are a fair and careful judge of AI assistants. You will rate the quality of one assistant answer \
to a user's request. Weigh how helpful, relevant, correct, deep, creative and appropriately detailed it \
is.{reference_rule} Start with a brief explanation of your assessment and be as objective as you can. \
Then give your rating, an integer from 1 (worst) to 10 (best), in exactly this form: "Rating: [[5]]"."""

_REFERENCE_RULE = (
    " A reference answer is provided: compare the assistant's answer with it, and point out and correct "
    "any mistakes; correctness matters most."
)

_PAIR_SYSTEM = """\
You are a fair and careful judge of AI assistants. You will compare two assistants' answers to the same \
user prompt. Before judging, work out your own answer to the prompt. Then compare both answers with \
yours: point out mistakes and inaccurate information, and consider whether each answer is helpful \
(it does what the prompt asks, or asks for clarification when the prompt is ambiguous), relevant, \
concise, and whether it leaves out anything important. Do not let the order of the answers, their \
length or the assistants' names sway you.

End with exactly one verdict label:
1. Assistant A is significantly better: [[A>>B]]
2. Assistant A is slightly better: [[A>B]]
3. Tie, relatively the same: [[A=B]]
4. Assistant B is slightly better: [[B>A]]
5. Assistant B is significantly better: [[B>>A]]

For example: "My final verdict is tie: [[A=B]]"."""


def single_messages(question: Question, answers: list[str], turn: int, *, with_reference: bool) -> list[dict[str, str]]:
    """Messages asking the judge to rate the answer to ``turn`` (1-based) of ``question``."""
    if not 1 <= turn <= len(question.turns):
        raise ValueError(f"question {question.id} has {len(question.turns)} turns, not {turn}")
    if len(answers) < turn:
        raise ValueError(f"question {question.id}: no answer for turn {turn}")
    reference = question.reference if with_reference and question.reference else None
    system = _SINGLE_SYSTEM.format(reference_rule=_REFERENCE_RULE if reference else "")
    parts: list[str] = []
    if turn == 1:
        parts.append(f"[Question]\n{question.turns[0]}")
        if reference:
            parts.append(f"[Start of the reference answer]\n{reference[0]}\n[End of the reference answer]")
        parts.append(f"[Start of the assistant's answer]\n{answers[0]}\n[End of the assistant's answer]")
    else:
        if reference:
            ref_lines = []
            for i in range(turn):
                ref = reference[i] if i < len(reference) else ""
                ref_lines += [f"### User\n{question.turns[i]}", f"### Reference answer\n{ref}"]
            parts.append("[Start of the reference conversation]\n" + "\n\n".join(ref_lines) + "\n[End of the reference conversation]")
        lines = []
        for i in range(turn):
            lines += [f"### User\n{question.turns[i]}", f"### Assistant\n{answers[i]}"]
        parts.append("[Start of the conversation with the assistant]\n" + "\n\n".join(lines) + "\n[End of the conversation with the assistant]")
        parts.append(f"Rate only the assistant's answer to the user's question number {turn}, in its context.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def pairwise_messages(question: Question, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """Messages asking the judge to compare ``answer_a`` (A) and ``answer_b`` (B) on a single-turn prompt."""
    prompt = question.turns[0]
    user = (
        f"<|User Prompt|>\n{prompt}\n\n"
        f"<|The Start of Assistant A's Answer|>\n{answer_a}\n<|The End of Assistant A's Answer|>\n\n"
        f"<|The Start of Assistant B's Answer|>\n{answer_b}\n<|The End of Assistant B's Answer|>"
    )
    return [{"role": "system", "content": _PAIR_SYSTEM}, {"role": "user", "content": user}]


_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_LOOSE = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")


def parse_rating(text: str) -> float | None:
    """The rating in ``text`` (see the module docstring)."""
    for pattern in (_RATING, _RATING_LOOSE):
        found = pattern.findall(text or "")
        if found:
            value = float(found[-1])
            return value if 1.0 <= value <= 10.0 else None
    return None


def parse_verdict(text: str) -> str | None:
    """The verdict label in ``text``, as Arena-Hard-Auto reads it (``winrate.verdict_label``)."""
    return verdict_label(text)
