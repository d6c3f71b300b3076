"""MT-Bench ratings read as FastChat reads them: a replay of realistic GPT-4 judge texts.

The reference is FastChat's rule, restated below in our own code with its upstream path (no FastChat code
is kept here): the rating patterns of ``run_judge_single`` and the means of ``show_result.py``. Every
judgement in ``AGREE`` is read the same by both (with the value a reader of the text would give); every
one in ``DEPARTURES`` is a documented departure of ``parse_rating`` (its docstring, numbered as here),
where FastChat reads a number that is not the judge's rating. The aggregation test grades all 80
questions x 2 turns through the real judge and the fake OpenAI server and compares the means with
``show_result.py``'s on the same judgements.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from statistics import fmean

import pytest

from lossforge.evaluators.judge_cache import JudgementCache
from lossforge.evaluators.judge_prompts import parse_rating
from lossforge.evaluators.llm_judge import MTBenchJudge
from lossforge.settings.judge import JudgeSettings
from lossforge.evaluators.questions import load_mt_bench
from lossforge.llm.client import LLMClient
from lossforge.llm.fake_server import FakeServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
KEY_ENV = "LOSSFORGE_TEST_KEY"

# -- the reference: lm-sys/FastChat fastchat/llm_judge (commit 0e6d3e4), restated ------------------------

#: common.py ``one_score_pattern`` then ``one_score_pattern_backup``: a number in double, else single brackets.
FASTCHAT_RATING_PATTERNS = (r"\[\[(\d+\.?\d*)\]\]", r"\[(\d+\.?\d*)\]")


def fastchat_rating(judgment: str) -> float:
    """FastChat's rating of one judgement, as common.py ``run_judge_single`` reads it: the FIRST number in
    double brackets anywhere in the text, else the first in single brackets, as a Python literal (int or
    float); -1 when neither pattern matches. No range check."""
    for pattern in FASTCHAT_RATING_PATTERNS:
        found = re.search(pattern, judgment)
        if found is not None:
            return ast.literal_eval(found.group(1))
    return -1


def fastchat_show_result(input_file: Path) -> dict[str, float]:
    """show_result.py ``display_result_single`` for one model: judgements scored -1 are left out, then the
    mean score of turn 1, of turn 2, and of both turns together."""
    rows = [json.loads(line) for line in input_file.read_text().splitlines() if line.strip()]
    rated = [r for r in rows if r["score"] != -1]
    assert len({r["model"] for r in rated}) == 1  # one model: the per-model groups are these means
    return {"turn_1": fmean(r["score"] for r in rated if r["turn"] == 1),
            "turn_2": fmean(r["score"] for r in rated if r["turn"] == 2),
            "average": fmean(r["score"] for r in rated)}


# (judgement, the rating its reader gives; None: no rating) - FastChat and lossforge agree on each
AGREE: list[tuple[str, float | None]] = [
    ("The assistant's response is accurate, well organised and covers the main causes the user asked about. "
     "It could have given a concrete example.\n\nRating: [[8]]", 8),
    ("The assistant's answer is incorrect. The reference answer computes the area with the shoelace formula "
     "and gets 3, while the assistant made a sign error and reports 0.\n\nRating: [[2]]", 2),
    ("Rating: [[7]]\n\nOn reflection, the second paragraph contains a factual error about the date, so a "
     "stricter judge might give [[6]].", 7),
    ("Rating: [[6]] (a [[10]] would need a worked example and a check of the edge cases)", 6),
    ("Turn 1: Rating: [[9]]\nTurn 2: Rating: [[4]]", 9),
    ("Rating: [[3]]\n\nFor comparison, the reference answer would get [[10]].", 3),
    ("The assistant correctly identifies the bug and explains the fix clearly. [[8]]", 8),
    ("The email is polite and concise and keeps the requested tone. Rating: [[7.5]]", 7.5),
    ("The poem follows the requested structure exactly and is creative.\n\nRating: [[10]]", 10),
    ("The response does not address the question at all.\n\nRating: [[1]]", 1),
    ("The answer is mostly correct but misses the second constraint. Rating: [5]", 5),
    ("The response is accurate and helpful. I would rate it [8].", 8),
    ("A good answer with minor omissions; I think [9] is fair.", 9),
    ("The argument follows Smith et al. [1] closely, which the user asked for.\n\nRating: [[7]]", 7),
    ("The code below is what the assistant wrote:\n\n```python\ndef first(nums):\n    return nums[0]\n```\n\n"
     "It fails on an empty list, which the question mentions explicitly.\n\nRating: [[4]]", 4),
    ("The assistant uses `arr[0]` as the pivot, which is fine for random input.\n\nRating: [[6]]", 6),
    ("**Evaluation:** the steps are right but the final number is rounded wrongly.\n\n**Rating:** [[5]]", 5),
    ("I'm sorry, but I cannot evaluate this response without seeing the assistant's answer.", None),
]

# (judgement, FastChat's reading, lossforge's, the departure's number in parse_rating's docstring)
DEPARTURES: list[tuple[str, float, float | None, int]] = [
    ("The assistant's code indexes nums[1] before checking the length, so it fails on a one-element list. "
     "Otherwise it is correct and readable. [6]", 1, 6, 1),
    ("It reads array[0] without checking that the array is non-empty, a crash on the first test case. "
     "Apart from that the approach is sound: [5]", 0, 5, 1),
    ("```python\nsizes = [3]\n```\nThe answer declares the list but never uses it; the explanation is fine.\n"
     "Rating: [7]", 3, 7, 1),
    ("On a scale of [[1]] to [[10]], this answer deserves [[7]]: correct, but terse.", 1, 7, 2),
    ("A [[10]] would need a complete proof of the second claim; the answer only sketches it.\n\nRating: [[6]]",
     10, 6, 3),
    ("The first answer would have earned [[9]]; the second one ignores the new constraint.\n\nRating: [[5]]",
     9, 5, 3),
    ("[2] states that the Peace of Westphalia was signed in 1648, which the assistant gets right, and the "
     "summary is faithful.\n\nRating: 9", 2, 9, 4),
    ("[1] Accuracy: correct.\n[2] Depth: shallow on the second part.\n[3] Clarity: good.\n\nOverall: [7]",
     1, 7, 4),
    ("The answer is correct and complete, with a clear explanation.\n\nRating: 8", -1, 8, 5),
    ("The answer is correct but verbose.\n\nRating: 8/10", -1, 8, 5),
    ("The answer is good.\n\nRating: [[ 8 ]]", -1, 8, 6),
    ("The answer is harmful and wrong.\n\nRating: [[0]]", 0, None, 7),
    ("Outstanding, beyond what was asked.\n\nRating: [[11]]", 11, None, 7),
]


@pytest.mark.parametrize("text, expected", AGREE)
def test_lossforge_reads_the_rating_fastchat_reads(text: str, expected: float | None) -> None:
    assert fastchat_rating(text) == (-1 if expected is None else expected)
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text, fastchat, ours, number", DEPARTURES)
def test_documented_departures_from_fastchat(text: str, fastchat: float, ours: float | None, number: int) -> None:
    assert fastchat_rating(text) == fastchat
    assert parse_rating(text) == ours
    assert f"\n    {number}. " in parse_rating.__doc__  # each departure is documented under its number


def test_the_issue_examples() -> None:
    # "[2] ... Rating: 9" gave 2; "Rating: [[6]] (a [[10]] would need ...)" gave 10; several [[x]]: the first
    assert parse_rating("[2] Jones (2019) agrees with the answer.\n\nRating: 9") == 9
    assert parse_rating("Rating: [[6]] (a [[10]] would need a proof)") == 6
    assert parse_rating("first [[3]] then [[6]]") == 3


def last_rule(text: str) -> float | None:
    """The rule lossforge had before: the last [[x]] (else the last [x]), in 1-10."""
    for pattern in (r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", r"\[\s*(\d+(?:\.\d+)?)\s*\]"):
        found = re.findall(pattern, text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= 10 else None
    return None


def test_the_means_over_80_questions_match_fastchat_show_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    questions = load_mt_bench(DATA / "mt_bench")
    answers = {q.id: [f"ans-{q.id}-one", f"ans-{q.id}-two"] for q in questions}
    texts = [t for t, _ in AGREE]
    judged: dict[tuple[str, int], str] = {}
    steps = []
    for i, q in enumerate(questions):
        for turn in (1, 2):
            text = texts[(3 * i + turn) % len(texts)]
            judged[(q.id, turn)] = text
            match = rf"ans-{q.id}-one(?![\s\S]*ans-{q.id}-two)" if turn == 1 else rf"ans-{q.id}-two"
            steps.append({"match": match, "text": text})
    with FakeServer(steps) as server, JudgementCache(tmp_path / "cache.sqlite") as cache:
        client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=0, timeout=10)
        score = MTBenchJudge(client, JudgeSettings(model="gpt-4", max_workers=4), cache=cache).score(questions, answers)
        assert server.remaining() == 0

    # the same judgements as FastChat's model_judgment/gpt-4_single.jsonl, then its show_result.py
    file = tmp_path / "gpt-4_single.jsonl"
    with file.open("w") as handle:
        for (qid, turn), text in judged.items():
            handle.write(json.dumps({"question_id": int(qid), "model": "m", "judge": ["gpt-4", "single-v1"],
                                     "judgment": text, "score": fastchat_rating(text), "turn": turn}) + "\n")
    fastchat = fastchat_show_result(file)
    assert score.mean == pytest.approx(fastchat["average"], abs=1e-12)
    assert score.turn_means[1] == pytest.approx(fastchat["turn_1"], abs=1e-12)
    assert score.turn_means[2] == pytest.approx(fastchat["turn_2"], abs=1e-12)
    unrated = sum(1 for t in judged.values() if fastchat_rating(t) == -1)
    assert unrated > 0 and score.n == 160 - unrated and score.n_invalid == unrated
    # the replay exercises what changed: the old last-[[x]] rule gives another mean on the same texts
    old = [last_rule(t) for t in judged.values()]
    old_mean = sum(v for v in old if v is not None) / sum(v is not None for v in old)
    assert abs(old_mean - fastchat["average"]) > 0.05
