"""Reasoning set apart from the answer: ``<think>`` blocks in whole texts and in streams cut anywhere."""
from __future__ import annotations

import pytest

from lossforge.llm.reasoning import ReasoningStream, split_reasoning

ANSWER = '{"thought": "t", "name": "n", "code": "def f(a):\\n    return a"}'


@pytest.mark.parametrize(
    "text, reasoning, answer, unclosed",
    [
        (ANSWER, "", ANSWER, False),  # no reasoning: the text is its own answer, unchanged
        (f"<think>\nLet me try {{\"code\": 1}}.\n</think>\n\n{ANSWER}", 'Let me try {"code": 1}.', f"\n\n{ANSWER}", False),
        (f"<THINKING>upper case</Thinking>{ANSWER}", "upper case", ANSWER, False),
        # DeepSeek-R1: the template opened the block in the prompt; only the closing tag is in the output
        (f"I start inside the reasoning.\n</think>\n{ANSWER}", "I start inside the reasoning.", f"\n{ANSWER}", False),
        # stopped (or cut off) while still reasoning
        ("<think>still thinking about the margin", "still thinking about the margin", "", True),
        (f"<think>one</think>{ANSWER}<think>two</think>", "one\n\ntwo", ANSWER, False),
        ("<think></think>ok", "", "ok", False),
    ],
)
def test_split_reasoning(text: str, reasoning: str, answer: str, unclosed: bool) -> None:
    split = split_reasoning(text)
    assert (split.reasoning, split.answer, split.unclosed) == (reasoning, answer, unclosed)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_stream_cut_anywhere_sends_no_tag_and_splits_like_the_whole_text(size: int) -> None:
    text = f"<think>\nA draft: {{\"code\": \"x\"}} is not it.\n</think>\n\n{ANSWER} <not a tag> a < b"
    answer: list[str] = []
    reasoning: list[str] = []
    stream = ReasoningStream(answer.append, reasoning.append)
    for i in range(0, len(text), size):
        stream.feed(text[i : i + size])
    split = stream.close()
    assert split == split_reasoning(text) and stream.text == text
    assert "".join(answer) == split.answer == f"\n\n{ANSWER} <not a tag> a < b"
    assert "".join(reasoning).strip() == split.reasoning == 'A draft: {"code": "x"} is not it.'
    assert not any("think>" in piece for piece in answer + reasoning)


def test_a_stream_that_begins_inside_the_reasoning_is_exact_at_the_end() -> None:
    answer: list[str] = []
    reasoning: list[str] = []
    stream = ReasoningStream(answer.append, reasoning.append)
    for piece in ["Hmm, the ", "margin.", "</th", "ink>", "\n", ANSWER]:
        stream.feed(piece)
    split = stream.close()
    # live, the text before the orphan closing tag could only be shown as answer; the result is exact
    assert "".join(answer) == "Hmm, the margin.\n" + ANSWER
    assert (split.reasoning, split.answer) == ("Hmm, the margin.", "\n" + ANSWER)
