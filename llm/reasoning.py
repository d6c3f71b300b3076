"""Reasoning models' answers: the reasoning (``<think>`` blocks) separated from the final answer.

Reasoning models send their chain of thought in one of two ways, and a client must never read it as the
answer (a draft inside the reasoning is not the proposal; a JSON example in it is not the verdict):

* a separate field of the message or of each streamed delta: ``reasoning_content`` (DeepSeek's API,
  vLLM's ``--reasoning-parser``, SGLang) or ``reasoning`` (OpenRouter, newer vLLM). ``llm.client`` reads
  those (``REASONING_FIELDS``);
* inside the content, between ``<think>`` and ``</think>`` (DeepSeek-R1, QwQ, Qwen3 served without a
  reasoning parser; ``<thinking>`` too). DeepSeek-R1's chat template puts the opening ``<think>`` in the
  prompt, so its output starts *inside* the reasoning and only the closing tag appears (SGLang's
  reasoning-parser notes: "DeepSeek-R1: No <think> start tag, jumps directly to thinking content"; vLLM
  ``vllm/reasoning/deepseek_r1_reasoning_parser.py`` handles the same case).

``split_reasoning(content)`` does the second for a whole text; ``ReasoningStream`` does it piece by piece
for a streamed answer, so the reasoning can be shown live apart from the answer.

What it guarantees
------------------
* ``split_reasoning``: every ``<think>...</think>`` block (case-insensitive, ``think`` or ``thinking``)
  goes to the reasoning; a closing tag before any opening tag means the text began inside the reasoning
  (everything before it is reasoning); an opening tag that is never closed makes the rest of the text
  reasoning (``unclosed`` is then True: the model stopped, or was cut off, while still reasoning). The
  answer is the rest of the text, unchanged (not stripped), so a text without tags is its own answer.
* ``ReasoningStream``: the pieces handed to ``on_answer`` / ``on_reasoning`` never contain a tag, also when
  a tag is split across pieces. One limit, by nature of a stream: text that comes before an orphan closing
  tag (the DeepSeek-R1 case) was already handed to ``on_answer`` when the tag shows it was reasoning;
  ``split`` (the final result) is always ``split_reasoning`` of the whole text and is exact.
"""
from __future__ import annotations

import re
from typing import Callable

from pydantic import BaseModel

__all__ = ["REASONING_FIELDS", "ReasoningSplit", "ReasoningStream", "split_reasoning"]

#: Message / delta fields that carry reasoning, in the order they are read.
REASONING_FIELDS = ("reasoning_content", "reasoning")

_OPEN = re.compile(r"<think(?:ing)?>", re.I)
_CLOSE = re.compile(r"</think(?:ing)?>", re.I)
_TAGS = ("<think>", "</think>", "<thinking>", "</thinking>")


class ReasoningSplit(BaseModel):
    """A text split into its reasoning and its answer."""

    reasoning: str  # the reasoning blocks' texts, stripped, joined by a blank line ("" without any)
    answer: str  # the text outside the blocks, as it was
    unclosed: bool = False  # an opening tag was never closed: the text ended inside the reasoning


def split_reasoning(text: str) -> ReasoningSplit:
    """``text`` split into reasoning (``<think>`` blocks) and answer; see the module docstring."""
    text = text or ""
    blocks: list[str] = []
    answer: list[str] = []
    unclosed = False
    position = 0
    first_open, first_close = _OPEN.search(text), _CLOSE.search(text)
    if first_close is not None and (first_open is None or first_close.start() < first_open.start()):
        blocks.append(text[: first_close.start()])  # the text began inside the reasoning
        position = first_close.end()
    while True:
        opening = _OPEN.search(text, position)
        if opening is None:
            answer.append(text[position:])
            break
        answer.append(text[position : opening.start()])
        closing = _CLOSE.search(text, opening.end())
        if closing is None:
            blocks.append(text[opening.end() :])
            unclosed = True
            break
        blocks.append(text[opening.end() : closing.start()])
        position = closing.end()
    reasoning = "\n\n".join(b.strip() for b in blocks if b.strip())
    return ReasoningSplit(reasoning=reasoning, answer="".join(answer), unclosed=unclosed)


Callback = Callable[[str], None]


class ReasoningStream:
    """Feeds streamed content to ``on_answer`` and ``on_reasoning`` with the ``<think>`` tags removed."""

    def __init__(self, on_answer: Callback | None = None, on_reasoning: Callback | None = None) -> None:
        self.on_answer = on_answer
        self.on_reasoning = on_reasoning
        self.inside = False  # within a reasoning block
        self.seen_tag = False
        self._held = ""  # text that may be the start of a tag
        self._parts: list[str] = []

    def feed(self, piece: str) -> None:
        """One piece of the content, as it arrived."""
        if not piece:
            return
        self._parts.append(piece)
        buffer = self._held + piece
        self._held = ""
        while buffer:
            pattern = _CLOSE if self.inside else _OPEN
            match = pattern.search(buffer)
            if not self.inside and not self.seen_tag:
                closing = _CLOSE.search(buffer)  # an orphan closing tag: the text began inside the reasoning
                if closing is not None and (match is None or closing.start() < match.start()):
                    self._send(buffer[: closing.start()])
                    self.seen_tag = True
                    buffer = buffer[closing.end() :]
                    continue
            if match is None:
                keep = _partial_tag(buffer)
                self._send(buffer[: len(buffer) - keep])
                self._held = buffer[len(buffer) - keep :]
                return
            self._send(buffer[: match.start()])
            self.inside = not self.inside
            self.seen_tag = True
            buffer = buffer[match.end() :]

    def close(self) -> ReasoningSplit:
        """The end of the stream: sends what was held back and returns the exact split of the whole text."""
        if self._held:
            self._send(self._held)
            self._held = ""
        return split_reasoning(self.text)

    @property
    def text(self) -> str:
        """The content received so far, tags included."""
        return "".join(self._parts)

    def _send(self, text: str) -> None:
        if not text:
            return
        target = self.on_reasoning if self.inside else self.on_answer
        if target is not None:
            target(text)


def _partial_tag(text: str) -> int:
    """How many characters at the end of ``text`` could begin a tag (0 when none)."""
    start = text.rfind("<")
    if start < 0 or len(text) - start >= max(map(len, _TAGS)):
        return 0
    tail = text[start:].lower()
    return len(text) - start if any(tag.startswith(tail) for tag in _TAGS) else 0
