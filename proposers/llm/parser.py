"""Reading a proposal (thought, name, code) out of an LLM's answer, tolerantly.

``parse_proposal(text)`` first sets aside a reasoning model's reasoning (``<think>...</think>`` blocks,
an unclosed ``<think>``, or a text that begins inside the reasoning and only closes it: see
``llm.reasoning``), then reads the final answer only. On that answer it tries, in order: the whole answer as JSON; JSON inside a Markdown fence; the
outermost ``{...}`` of the answer as loose JSON (raw newlines in strings, trailing commas, or a Python
dict literal); a fenced ``python`` block holding a ``def`` (the prose around it becomes the thought);
finally bare source starting at a line ``import ...`` / ``def ...`` that parses as Python.

What it guarantees
------------------
* Reasoning is never read as the proposal: a draft or an example JSON object inside ``<think>`` is
  ignored, and an answer that is only reasoning is refused with a message that says so.
* It returns a ``ParsedProposal`` whose ``code`` is non-empty and contains a ``def``, whose ``name`` is a
  snake_case identifier (from the answer's name, else the function's name, else ``llm_loss``), and whose
  ``how`` says which reading succeeded.
* Otherwise it raises ``ProposalError`` whose ``raw`` is the complete answer and whose message says what
  was missing and quotes the start of the answer, so a failed proposal is recorded with its evidence.

It does not check the code (the sandbox does, and its report drives the repair loop), so code with a
syntax error inside JSON or a fence is returned as is.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any

from pydantic import BaseModel

from lossforge.errors import LossforgeError
from lossforge.llm.reasoning import split_reasoning

__all__ = ["ParsedProposal", "ProposalError", "parse_proposal", "snake_name"]


class ProposalError(LossforgeError, RuntimeError):
    """The model's answer holds no usable proposal; ``raw`` is the full answer."""

    def __init__(self, message: str, raw: str = "") -> None:
        excerpt = " ".join(raw.split())[:300]
        super().__init__(f"{message}; the answer began: {excerpt!r}" if raw else message)
        self.raw = raw


class ParsedProposal(BaseModel):
    thought: str
    name: str
    code: str
    how: str  # "json", "fenced_json", "loose_json", "fenced_code", "bare_code"


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_DEF = re.compile(r"^[ \t]*def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.M)
_KEYS = {
    "code": ("code", "source", "loss_code", "python", "implementation"),
    "thought": ("thought", "thoughts", "reasoning", "rationale", "analysis", "explanation"),
    "name": ("name", "loss_name", "function_name"),
}


def snake_name(name: str, code: str = "") -> str:
    """A snake_case identifier of at most 48 characters for the proposal."""
    text = re.sub(r"[^0-9A-Za-z_]+", "_", name or "").strip("_").lower()[:48].strip("_")
    if not text:
        found = _DEF.search(code or "")
        text = found.group(1).lower()[:48] if found else "llm_loss"
    if text[0].isdigit():
        text = "loss_" + text
    return text


def _strip_fence(code: str) -> str:
    match = _FENCE.search(code)
    if match and "def " in match.group(2):
        return match.group(2).strip("\n")
    return code.strip("\n")


def _pick(data: dict[str, Any], field: str) -> str | None:
    for key in _KEYS[field]:
        value = data.get(key)
        if isinstance(value, str):
            return value
    return None


def _from_mapping(data: Any, how: str) -> ParsedProposal | None:
    if not isinstance(data, dict):
        return None
    data = {str(k).lower(): v for k, v in data.items()}
    code = _pick(data, "code")
    if code is None or "def " not in code:
        return None
    code = _strip_fence(code)
    return ParsedProposal(
        thought=(_pick(data, "thought") or "").strip(),
        name=snake_name(_pick(data, "name") or "", code),
        code=code,
        how=how,
    )


def _loads(text: str) -> Any:
    """json.loads, then the same without trailing commas, then a Python literal; None if all fail."""
    for attempt in (text, re.sub(r",\s*([}\]])", r"\1", text)):
        try:
            return json.loads(attempt, strict=False)
        except ValueError:
            continue
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def parse_proposal(text: str) -> ParsedProposal:
    """The proposal in the final answer of ``text`` (see the module docstring).

    Raises ``ProposalError`` (``raw`` = ``text``) when the answer is empty, holds only reasoning, or has
    no function in any of the shapes read.
    """
    raw = text or ""
    split = split_reasoning(raw)
    body = split.answer.strip().lstrip("\ufeff").strip()
    if not body:
        if split.reasoning:
            where = "a <think> block that is never closed" if split.unclosed else "reasoning"
            raise ProposalError(
                f"the model's answer holds only reasoning ({len(split.reasoning)} characters in {where}) and no "
                "final answer after it; the reasoning is not read as a proposal", raw)
        raise ProposalError("the model's answer is empty", raw)

    # 1. the whole answer is JSON
    try:
        found = _from_mapping(json.loads(body, strict=False), "json")
    except ValueError:
        found = None
    if found:
        return found

    fences = [(lang.lower(), content) for lang, content in _FENCE.findall(body)]
    # 2. JSON inside a fence
    for lang, content in fences:
        if lang in ("json", "") or content.lstrip().startswith("{"):
            found = _from_mapping(_loads(content.strip()), "fenced_json")
            if found:
                return found

    # 3. the outermost braces of the answer, read loosely
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        found = _from_mapping(_loads(body[start : end + 1]), "loose_json")
        if found:
            return found

    # 4. a fenced python block with a function in it; the prose around it is the thought
    for lang, content in fences:
        if lang in ("python", "py", "python3", "") and _DEF.search(content):
            code = content.strip("\n")
            thought = _FENCE.sub(" ", body)
            thought = " ".join(thought.split())[:2000]
            return ParsedProposal(thought=thought, name=snake_name(_name_hint(body), code), code=code, how="fenced_code")

    # 5. bare source from the first import/def line, if it parses
    lines = body.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"(import |from \S+ import |def [A-Za-z_])", line):
            code = "\n".join(lines[index:]).strip("\n")
            if _DEF.search(code):
                try:
                    ast.parse(code)
                except SyntaxError:
                    break
                thought = " ".join(" ".join(lines[:index]).split())[:2000]
                return ParsedProposal(thought=thought, name=snake_name("", code), code=code, how="bare_code")
            break

    if body.lstrip().startswith("{") or any(lang == "json" for lang, _ in fences):
        raise ProposalError("the model's answer looks like JSON but has no readable \"code\" field with a function", raw)
    raise ProposalError("no loss function found in the model's answer (expected JSON with a \"code\" field or a fenced python block)", raw)


def _name_hint(text: str) -> str:
    match = re.search(r"(?im)^\s*(?:\*\*)?name(?:\*\*)?\s*[:=]\s*`?([A-Za-z_][\w-]*)`?", text)
    return match.group(1) if match else ""
