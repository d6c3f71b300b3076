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
* ``parse_rating`` reads a rating as FastChat's MT-Bench judge does (the first ``[[x]]``, else the first
  ``[x]``; lm-sys/FastChat ``fastchat/llm_judge/common.py``, ``run_judge_single``), with the departures
  listed in its docstring, each where FastChat reads something that is not the judge's rating. It returns
  a float in [1, 10] or None.
* ``load_judge_prompts(path)`` reads FastChat's ``judge_prompts.jsonl``; ``JudgePrompts.single_messages``
  picks ``single-v1``, ``single-math-v1``, ``single-v1-multi-turn`` or ``single-math-v1-multi-turn`` by
  turn and reference as FastChat's ``gen_judgment.py`` does, and fills the template exactly as
  ``run_judge_single`` does, so scores are comparable with published MT-Bench numbers.
* ``parse_verdict`` returns one of ``VERDICTS`` read by Arena-Hard-Auto's 2025 label rules (case-blind,
  ``[[label]]`` before the single-bracket ``[label]``, the last label counts, mirrored forms such as
  ``[[B<A]]`` normalised; ``winrate.verdict_label``), or None.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossforge.errors import UsageError
from lossforge.evaluators.questions import Question
from lossforge.evaluators.winrate import verdict_label

__all__ = [
    "FASTCHAT_SINGLE_PROMPTS",
    "JudgePrompts",
    "JudgePromptsError",
    "PROMPT_VERSION",
    "VERDICTS",
    "load_judge_prompts",
    "pairwise_messages",
    "parse_rating",
    "parse_verdict",
    "single_messages",
]

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


# A rating in FastChat's form and its backup (fastchat/llm_judge/common.py: one_score_pattern,
# one_score_pattern_backup), with blanks inside the brackets allowed.
_DOUBLE = re.compile(r"\[\[\s*(\d+\.?\d*)\s*\]\]")
_SINGLE = re.compile(r"\[\s*(\d+\.?\d*)\s*\]")
_NUMBER = r"\[{1,2}\s*\d+\.?\d*\s*\]{1,2}"
# A stated scale: "[[1]] to [[10]]", "[1]-[10]", "between [[1]] and [[10]]", "out of [[10]]", "scale of [10]".
_SCALES = (
    re.compile(rf"(?i)\bbetween\s+{_NUMBER}\s+and\s+{_NUMBER}"),
    re.compile(rf"{_NUMBER}\s*(?:to|-|\u2013|\u2014)\s*{_NUMBER}"),
    re.compile(rf"(?i)\b(?:out\s+of|scale\s+of)\s*{_NUMBER}"),
)
# "Rating: [[7]]", "rating is [[7]]", "**Score:** [[7]]": the label right before the brackets.
_LABEL_TIGHT = re.compile(r"(?i)\b(?:rating|score|grade)\b\s*(?:is\b)?\s*[:=]?\s*[*_]*\s*$")
# "Rating: [7]", "I rate this answer [7]": a rating word earlier in the same clause (no digit, bracket or
# sentence end between them).
_LABEL_LOOSE = re.compile(
    r"(?i)\b(?:rat(?:e|es|ed|ing)|scores?|scored|grades?|graded|give|gives|giving|deserves?)\b[^\[\]\n.!?\d]{0,30}$"
)
# A citation: "see [2]", "in [2]", "cf. [2]".
_CITED = re.compile(r"(?i)\b(?:see|in|cf\.?|ref\.?|from|per|source|sources|footnote)\s*$")
_LIST_MARKER = re.compile(r"(?m)^[ \t>*-]*\[\s*(\d+)\s*\]")
# "Rating: 9" without brackets (not "Rating: 1-10" or "Rating: 1 to 10").
_UNBRACKETED = re.compile(
    r"(?i)\b(?:rating|score)\b\s*(?:is\b)?\s*:\s*[*_]*\s*(\d+\.?\d*)(?![\d.]*\s*(?:to|-|\u2013|\u2014)\s*\d)"
)
_FENCE = re.compile(r"(?ms)^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)")
_INLINE_CODE = re.compile(r"`[^`\n]+`")


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with every match of ``pattern`` replaced by spaces (offsets are kept)."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _in_range(value: str) -> float | None:
    rating = float(value)
    return rating if 1.0 <= rating <= 10.0 else None


def parse_rating(text: str) -> float | None:
    """The judge's 1-10 rating in ``text``, or None when there is none.

    FastChat's rule (lm-sys/FastChat ``fastchat/llm_judge/common.py``, ``run_judge_single``): the first
    ``[[x]]`` (``one_score_pattern``), else the first ``[x]`` (``one_score_pattern_backup``); a judgement
    without either is rated -1 and ``show_result.py`` leaves it out of the means (here: None). This
    function follows that rule, with these departures, each where FastChat reads a number that is not the
    judge's rating (tests/evaluators/test_rating_replay.py replays each against FastChat's regexes):

    1. Code is never a rating: fenced code blocks are skipped, inline code spans too for ``[x]``, and a
       bracket right after a name, ``]`` or ``)`` is an index (FastChat reads ``array[0]`` as 0).
    2. A stated scale is never a rating: ``[[1]] to [[10]]``, ``[1]-[10]``, ``between [[1]] and [[10]]``,
       ``out of [[10]]``, ``scale of [10]`` (FastChat reads 1 from "on a scale of [[1]] to [[10]]").
    3. Among several ``[[x]]``, the first one labelled as the rating ("Rating: [[6]]", "rating is [[6]]",
       "**Score:** [[6]]") counts; without a label, the first (FastChat: the first, so "A [[10]] would
       need a proof. Rating: [[6]]" gives 10).
    4. A single-bracketed ``[x]`` that is a list marker or a citation is never a rating: one at the start
       of a line, one after "see", "in", "cf.", "from", "per", and an unlabelled one whose number a line
       starts with (FastChat reads 2 from "[2] ... Rating: 9"). Among the others, one labelled as the
       rating ("Rating: [7]", "I rate it [7]") comes first.
    5. "Rating: 9" or "Score: 9" without brackets is read when no ``[[x]]`` and no labelled ``[x]`` is
       (FastChat: -1, or a citation before it); it comes before an unlabelled ``[x]``.
    6. Blanks inside the brackets are allowed (``[[ 8 ]]``; FastChat: -1).
    7. A rating outside 1-10, the scale the prompts ask for, is None (FastChat averages ``[[0]]`` and
       ``[[11]]`` as 0 and 11).

    Returns a float in [1, 10] or None; never raises.
    """
    text = text or ""
    prose = _blank(text, _FENCE)
    scales = [m.span() for pattern in _SCALES for m in pattern.finditer(prose)]

    def usable(m: re.Match[str], plain: str) -> bool:
        start, end = m.span()
        if any(a <= start and end <= b for a, b in scales):
            return False
        before = plain[start - 1] if start else ""
        return not (re.match(r"[\w\])]", before) and not _LABEL_TIGHT.search(plain[:start]))

    doubles = [m for m in _DOUBLE.finditer(prose) if usable(m, prose)]
    if doubles:
        labelled = [m for m in doubles if _LABEL_TIGHT.search(prose[: m.start()])]
        return _in_range((labelled or doubles)[0].group(1))
    plain = _blank(prose, _INLINE_CODE)
    singles = [
        m for m in _SINGLE.finditer(plain)
        if usable(m, plain) and plain[m.start() - 1: m.start()] != "[" and plain[m.end(): m.end() + 1] != "]"
    ]
    markers = {m.end() for m in _LIST_MARKER.finditer(plain)}
    numbers = {float(m.group(1)) for m in _LIST_MARKER.finditer(plain)}
    singles = [m for m in singles if m.end() not in markers and not _CITED.search(plain[: m.start()])]
    labelled = [m for m in singles if _LABEL_LOOSE.search(plain[: m.start()])]
    if labelled:
        return _in_range(labelled[0].group(1))
    unbracketed = _UNBRACKETED.search(plain)
    if unbracketed:
        return _in_range(unbracketed.group(1))
    unlabelled = [m for m in singles if float(m.group(1)) not in numbers]
    return _in_range(unlabelled[0].group(1)) if unlabelled else None


def parse_verdict(text: str) -> str | None:
    """The verdict label in ``text``, as Arena-Hard-Auto reads it (``winrate.verdict_label``)."""
    return verdict_label(text)


# -- FastChat's judge prompts (--judge-prompts) ---------------------------------------------------------

#: The single-answer prompts of FastChat's judge_prompts.jsonl by (reference shown, second turn), as
#: fastchat/llm_judge/gen_judgment.py's make_judge_single picks them ("default", "math", "default-mt",
#: "math-mt"), with the template fields run_judge_single fills for each.
FASTCHAT_SINGLE_PROMPTS: dict[tuple[bool, bool], tuple[str, frozenset[str]]] = {
    (False, False): ("single-v1", frozenset({"question", "answer"})),
    (True, False): ("single-math-v1", frozenset({"question", "answer", "ref_answer_1"})),
    (False, True): ("single-v1-multi-turn", frozenset({"question_1", "question_2", "answer_1", "answer_2"})),
    (True, True): ("single-math-v1-multi-turn",
                   frozenset({"question_1", "question_2", "answer_1", "answer_2", "ref_answer_1", "ref_answer_2"})),
}


class JudgePromptsError(UsageError):
    """A judge prompt file that cannot be used; the message names the file, the prompt and what to fix."""


@dataclass(frozen=True)
class JudgePrompts:
    """FastChat's four single-answer judge prompts, read from its ``judge_prompts.jsonl``.

    ``version`` (``fastchat-<12 hex>``, a hash of the four prompts' names, system prompts and templates)
    goes into every cache key in place of ``PROMPT_VERSION``, so an edited file never reuses verdicts.
    """

    path: str
    prompts: dict[str, dict[str, Any]]
    version: str

    def single_messages(self, question: Question, answers: list[str], turn: int, *,
                        with_reference: bool) -> list[dict[str, str]]:
        """The messages FastChat's ``run_judge_single`` sends to an OpenAI judge for ``turn`` of ``question``.

        Turn 1 uses ``single-v1`` (``single-math-v1`` with the reference's first turn), turn 2 the
        ``-multi-turn`` prompt with both turns (and both reference turns). The system message is the
        prompt's ``system_prompt``, the user message its ``prompt_template`` filled with ``str.format``,
        as upstream. Raises ``ValueError`` for a turn FastChat does not grade (a third turn, or the second
        turn of a question that does not have exactly two) or a missing answer or reference turn.
        """
        if turn not in (1, 2) or (turn == 2 and len(question.turns) != 2) or turn > len(question.turns):
            raise ValueError(
                f"question {question.id}: FastChat's judge prompts grade turn 1, and turn 2 of two-turn "
                f"questions; this question has {len(question.turns)} turns, turn {turn} was asked"
            )
        if len(answers) < turn:
            raise ValueError(f"question {question.id}: no answer for turn {turn}")
        reference = question.reference if with_reference else None
        if reference is not None and len(reference) < turn:
            raise ValueError(f"question {question.id}: the reference answer has no turn {turn}")
        name, _ = FASTCHAT_SINGLE_PROMPTS[(reference is not None, turn == 2)]
        prompt = self.prompts[name]
        fields: dict[str, str] = {}
        if reference is not None:
            fields["ref_answer_1"] = reference[0]
            if turn == 2:
                fields["ref_answer_2"] = reference[1]
        if turn == 2:
            user = prompt["prompt_template"].format(question_1=question.turns[0], question_2=question.turns[1],
                                                    answer_1=answers[0], answer_2=answers[1], **fields)
        else:
            user = prompt["prompt_template"].format(question=question.turns[0], answer=answers[0], **fields)
        return [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]


def load_judge_prompts(path: str | Path) -> JudgePrompts:
    """Read FastChat's ``judge_prompts.jsonl`` (fastchat/llm_judge/data/judge_prompts.jsonl, one JSON object
    per line with ``name``, ``type``, ``system_prompt``, ``prompt_template``, ``output_format``).

    Only the four single-answer prompts are used (``FASTCHAT_SINGLE_PROMPTS``); other rows (the pairwise
    ones) are ignored. Raises ``JudgePromptsError`` when the file is missing or not JSON lines, when one of
    the four is missing, is not ``"type": "single"`` with ``"output_format": "[[rating]]"``, or when its
    template asks for a field FastChat does not fill.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise JudgePromptsError(f"judge prompt file {file} does not exist: give FastChat's judge_prompts.jsonl "
                                "(fastchat/llm_judge/data/judge_prompts.jsonl)")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise JudgePromptsError(f"{file}:{number}: not JSON ({error})") from None
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise JudgePromptsError(f"{file}:{number}: expected a JSON object with a \"name\"")
        rows[row["name"]] = row
    used: dict[str, dict[str, Any]] = {}
    for name, allowed in FASTCHAT_SINGLE_PROMPTS.values():
        row = rows.get(name)
        if row is None:
            raise JudgePromptsError(
                f"{file} has no prompt named {name!r}: a FastChat judge_prompts.jsonl has single-v1, single-math-v1, "
                f"single-v1-multi-turn and single-math-v1-multi-turn (found: {', '.join(sorted(rows)) or 'none'})"
            )
        if row.get("type") != "single" or row.get("output_format") != "[[rating]]":
            raise JudgePromptsError(f"{file}: prompt {name!r} must have \"type\": \"single\" and \"output_format\": "
                                    f"\"[[rating]]\" (got {row.get('type')!r}, {row.get('output_format')!r})")
        if not isinstance(row.get("system_prompt"), str) or not isinstance(row.get("prompt_template"), str):
            raise JudgePromptsError(f"{file}: prompt {name!r} needs a string system_prompt and prompt_template")
        try:
            fields = {field for _, field, _, _ in string.Formatter().parse(row["prompt_template"]) if field is not None}
        except ValueError as error:
            raise JudgePromptsError(f"{file}: prompt {name!r} has a malformed template ({error})") from None
        unknown = fields - allowed
        if unknown:
            raise JudgePromptsError(f"{file}: prompt {name!r} asks for {sorted(unknown)}; FastChat fills only "
                                    f"{sorted(allowed)} in it")
        used[name] = {k: row[k] for k in ("name", "type", "system_prompt", "prompt_template", "output_format")}
    digest = hashlib.sha256(json.dumps(used, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    return JudgePrompts(path=str(file), prompts=used, version=f"fastchat-{digest}")
