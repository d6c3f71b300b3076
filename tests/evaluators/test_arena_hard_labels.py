"""Arena-Hard verdict labels and scores, against Arena-Hard-Auto's documented rules on the same judge texts.

The reference below is our own statement of the rules of lmarena/arena-hard-auto at commit
196f6b826783b3da7310e361a805fa36f0be83f3 (April 2025), written from their behaviour (no upstream code is
kept here): the label of a judgement (gen_judgment.py ``get_score`` with the ``regex_patterns`` of
config/arena-hard-v2.0.yaml, the same in arena-hard-v0.1.yaml), the battles a label scores, and the null
filter of show_result.py ``load_judgments``. lossforge must give the same label for every judge text, and the
same win rate through its real judging path (``run_judge`` on the shipped v0.1 folder with the scripted
fake OpenAI server), for a corpus of realistic verdicts with the edge cases: case, the single-bracket
fallback, several labels (the last counts), mirrored labels, spaces, no label.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lossforge.evaluators.judge_prompts import parse_verdict
from lossforge.evaluators.judge_run import run_judge
from lossforge.settings.judge import JudgeRun
from lossforge.settings.judge import JudgeSettings
from lossforge.evaluators.questions import load_arena_hard
from lossforge.evaluators.winrate import verdict_label
from lossforge.llm.fake_server import FakeServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repository
KEY_ENV = "LOSSFORGE_TEST_KEY"


# -- the reference: Arena-Hard-Auto's rules, restated ------------------------------------------------------

#: The two label patterns, tried in this order (config/arena-hard-v2.0.yaml, ``regex_patterns``).
UPSTREAM_PATTERNS = [r"\[\[([AB<>=]+)\]\]", r"\[([AB<>=]+)\]"]


def arena_hard_label(text: str, patterns: list[str] = UPSTREAM_PATTERNS) -> str | None:
    """The label Arena-Hard-Auto reads from a judgement (gen_judgment.py ``get_score``).

    The text is upper-cased; the first pattern with any match decides, and of its matches the LAST one is
    the label; a pattern without a match hands over to the next; no match at all: None.
    """
    upper = text.upper()
    for pattern in patterns:
        found = re.findall(pattern, upper)
        if found:
            return found[-1]
    return None


#: The ten labels show_result.py ``load_judgments`` scores (weight=3), as (A's score, battles counted):
#: A better scores 1, a tie 0.5, A worse 0; a "much" label (>> or <<) counts as three battles. Any other
#: label is a KeyError there (show_result.py stops).
A_SCORE: dict[str, tuple[float, int]] = {
    "A>>B": (1.0, 3), "A>B": (1.0, 1), "A=B": (0.5, 1), "A<B": (0.0, 1), "A<<B": (0.0, 3),
    "B<<A": (1.0, 3), "B<A": (1.0, 1), "B=A": (0.5, 1), "B>A": (0.0, 1), "B>>A": (0.0, 3),
}


def upstream_scores(games: list[dict]) -> list[float]:
    """The model's battle scores for one question: game 1 has the model as A (A's score as is), game 0 has
    the baseline as A and the model as B (one minus A's score); each repeated by its label's battle count
    (gen_judgment.py plays the baseline first, then the swapped round; show_result.py explodes the scores)."""
    first, second = A_SCORE[games[0]["score"]], A_SCORE[games[1]["score"]]
    return [second[0]] * second[1] + [1.0 - first[0]] * first[1]


def upstream_is_null(games: list[dict | None]) -> bool:
    """show_result.py's null filter: a question is dropped if either game, or either game's label, is missing."""
    return any(game is None or game["score"] is None for game in games)


def upstream_win_rate(questions_games: list[list[dict]]) -> float:
    """The model's score in show_result.py: the mean of the exploded per-battle scores (with one model and
    one baseline, ``print_leaderboard``'s bootstrap mean estimates exactly this)."""
    scores = [s for x in questions_games if not upstream_is_null(x) for s in upstream_scores(x)]
    return sum(scores) / len(scores)


# -- the corpus: judge texts as judges write them --------------------------------------------------------

def judgement(body: str) -> str:
    return ("Let me work out my own answer first. The prompt asks for a Python function that removes duplicates "
            "while keeping order; a dict-based solution is O(n).\n\nAssistant A gives a correct solution with a "
            "short explanation. Assistant B's solution sorts the list, which loses the original order.\n\n" + body)


CORPUS: dict[str, str] = {
    "strong_a": judgement("My final verdict is: Assistant A is significantly better: [[A>>B]]"),
    "slight_a": judgement("My final verdict is Assistant A is slightly better: [[A>B]]."),
    "tie": judgement('My final verdict is tie: [[A=B]]'),
    "slight_b": judgement("**Final verdict:** [[B>A]]"),
    "strong_b": judgement("My final verdict is: [[B>>A]]"),
    # the judge restates the label list before its verdict: the last label counts
    "restated_list": judgement("The possible verdicts are [[A>>B]], [[A>B]], [[A=B]], [[B>A]] and [[B>>A]].\n\n"
                               "Weighing everything, my final verdict is [[B>A]]"),
    # changes its mind: the last label counts
    "changed_mind": judgement("At first glance [[A>B]]. But B's edge-case handling is much better, so my final "
                              "verdict is [[B>>A]]"),
    "lower_case": judgement("my final verdict is [[a>b]]"),
    "mixed_case": judgement("Final verdict: [[b>>A]]"),
    # only single brackets: the fallback pattern
    "single_bracket": judgement("My final verdict is [A>B]"),
    "single_bracket_strong": judgement("Final verdict: [B>>A]."),
    # a double-bracket label wins over a later single-bracket one
    "double_before_single": judgement("My final verdict is [[A=B]] (not [B>A], as I first thought)."),
    # mirrored labels, scored by upstream's table
    "mirrored_b_lt_a": judgement("My final verdict: [[B<A]]"),
    "mirrored_a_ll_b": judgement("My final verdict: [[A<<B]]"),
    "mirrored_tie": judgement("My final verdict is [[B=A]]"),
    "triple_brackets": judgement("My final verdict is [[[A>>B]]]"),
    "bold_label": judgement("My final verdict is **[[A>B]]**"),
    # a reasoning judge's draft in the text: still the last label
    "think_draft": "<think>A looks better, [[A>B]]? Let me check B again.</think>\nB handles the edge cases. [[B>A]]",
    # no label upstream reads: the question is dropped there and here
    "spaced": judgement("My final verdict is [[A > B]]"),
    "no_label": judgement("Both answers are fine; I cannot decide between them."),
    "citation_only": judgement("See the docs [1] and [2]; overall a tie."),
}

# Texts on which show_result.py stops with a KeyError (the last label is not in its table); lossforge
# records no verdict instead, so the question is asked again next run.
UPSTREAM_CRASHES = {
    "bare_letter": judgement("Assistant [[A]] is better."),
    "chained": judgement("My final verdict is [[A>B>A]]"),
    "code_after_verdict": judgement("No double label here: [A>B]. In B's code `dp[B]` is never set."),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_label_is_read_as_arena_hard_reads_it(name: str) -> None:
    text = CORPUS[name]
    theirs = arena_hard_label(text)
    ours = parse_verdict(text)
    assert ours == verdict_label(text)
    if theirs is None:
        assert ours is None
    else:
        assert ours is not None and A_SCORE[ours] == A_SCORE[theirs]


def test_the_corpus_covers_every_label_and_the_fallback() -> None:
    labels = {arena_hard_label(t) for t in CORPUS.values()}
    assert set(A_SCORE) - labels == {"A<B", "B<<A"}  # eight of upstream's ten labels appear as written
    assert [n for n, t in CORPUS.items() if arena_hard_label(t) is None] == ["spaced", "no_label", "citation_only"]
    assert arena_hard_label(CORPUS["single_bracket"], UPSTREAM_PATTERNS[:1]) is None  # read by the fallback only


@pytest.mark.parametrize("name", sorted(UPSTREAM_CRASHES))
def test_labels_upstream_cannot_score_are_no_verdict(name: str) -> None:
    text = UPSTREAM_CRASHES[name]
    with pytest.raises(KeyError):
        A_SCORE[arena_hard_label(text)]
    assert parse_verdict(text) is None


@pytest.mark.parametrize("label, expected", [
    ("A>>B", "A>>B"), ("A>B", "A>B"), ("A=B", "A=B"), ("B>A", "B>A"), ("B>>A", "B>>A"),
    ("A<<B", "B>>A"), ("A<B", "B>A"), ("B=A", "A=B"), ("B<<A", "A>>B"), ("B<A", "A>B"),
])
def test_all_ten_upstream_labels(label: str, expected: str) -> None:
    assert verdict_label(f"verdict: [[{label}]]") == expected
    assert A_SCORE[expected] == A_SCORE[label]


# -- the same win rate through the real judging path -------------------------------------------------------

# (model as B, model as A) per question = upstream's (game 0, game 1)
PAIRS = [
    ("strong_b", "slight_a"), ("tie", "lower_case"), ("restated_list", "mixed_case"), ("single_bracket", "tie"),
    ("changed_mind", "strong_a"), ("mirrored_b_lt_a", "mirrored_a_ll_b"), ("mirrored_tie", "single_bracket_strong"),
    ("double_before_single", "triple_brackets"), ("bold_label", "think_draft"), ("slight_b", "strong_b"),
    ("spaced", "strong_a"),           # dropped: one game has no label
    ("slight_a", "no_label"),         # dropped
    ("citation_only", "spaced"),      # dropped
    ("strong_a", "slight_b"), ("lower_case", "mixed_case"), ("single_bracket_strong", "changed_mind"),
]


def upstream_answer_row(uid: str, model: str, prompt: str, answer: str) -> dict:
    """One row of Arena-Hard-Auto's model_answer/<model>.jsonl, as gen_answer.py writes it."""
    return {"uid": uid, "ans_id": f"ans-{uid}", "model": model, "tstamp": 1744155079.0,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": {"answer": answer}}],
            "metadata": {"token_len": len(answer.split())}}


def test_win_rate_equals_arena_hard_show_result_on_the_same_verdicts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-SECRET123")
    questions = load_arena_hard(DATA / "arena_hard" / "v0.1")[: len(PAIRS)]
    baseline_rows = {json.loads(line)["uid"]: json.loads(line)
                     for line in (DATA / "arena_hard" / "v0.1" / "model_answer" / "gpt-4-0314.jsonl").read_text().split("\n") if line}
    mine = tmp_path / "my-model.jsonl"
    mine.write_text("".join(json.dumps(upstream_answer_row(q.id, "my-model", q.turns[0], f"model-{q.id} says hello")) + "\n"
                            for q in questions))
    steps, reference = [], []
    for q, (as_b, as_a) in zip(questions, PAIRS):
        base = re.escape(baseline_rows[q.id]["messages"][-1]["content"]["answer"][:60])
        steps.append({"match": rf"{base}[\s\S]*model-{q.id} says", "text": CORPUS[as_b]})  # baseline A, model B
        steps.append({"match": rf"model-{q.id} says[\s\S]*{base}", "text": CORPUS[as_a]})  # model A, baseline B
        games = [arena_hard_label(CORPUS[as_b]), arena_hard_label(CORPUS[as_a])]
        reference.append([None if g is None else {"score": g} for g in games])
    with FakeServer(steps) as server:
        run = JudgeRun(benchmark="arena_hard", questions=DATA / "arena_hard" / "v0.1", answers=mine, limit=len(PAIRS),
                       judge=JudgeSettings(model="judge", max_workers=4), base_url=server.base_url,
                       api_key_env=KEY_ENV, cache=tmp_path / "cache.sqlite")
        summary = run_judge(run)
        assert len(server.chat_requests) == 2 * len(PAIRS)
    assert summary["win_rate"] == pytest.approx(upstream_win_rate(reference), abs=1e-12)
    # by hand, per counted question (the model's scores: label score as A, 1 - label score as B; strong x3):
    # 3+1, .5+1, 1+0, 0+.5, 3+3, 0+0, .5+0, .5+3, 0+0, 1+0, 0+0, 0+0, 3+0 = 21 over 50 battles
    assert summary["win_rate"] == pytest.approx(21 / 50)
    assert summary["n_questions"] == len(PAIRS) - 3 and summary["n_games"] == 2 * (len(PAIRS) - 3)
    assert summary["n_invalid"] == 4  # the four games without a label upstream reads
    assert summary["baselines"] == {"arena-hard-v0.1": "gpt-4-0314"}
    assert summary["by_category"] == {"arena-hard-v0.1": pytest.approx(summary["win_rate"])}
    total = sum(len(upstream_scores(x)) for x in reference if not upstream_is_null(x))
    assert summary["counts"]["strong_win"] * 3 + summary["counts"]["win"] + summary["counts"]["tie"] \
        + summary["counts"]["loss"] + summary["counts"]["strong_loss"] * 3 == total
