"""A judge call that fails (HTTP 400 from the fake OpenAI server on one question) is recorded: the other
questions are judged, the partial result is written and names the failed question with its error, and the
next run asks the judge only for what failed (the judgement cache keeps the rest)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.evaluators.answers import write_answers
from lossforge.evaluators.judge_cache import JudgementCache
from lossforge.evaluators.judge_run import JudgeIncomplete, run_judge
from lossforge.settings.judge import JudgeRun
from lossforge.evaluators.llm_judge import MTBenchJudge, PairwiseJudge
from lossforge.settings.judge import JudgeSettings
from lossforge.evaluators.questions import load_arena_hard, load_mt_bench
from lossforge.llm.client import LLMClient
from lossforge.llm.fake_server import FakeServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
KEY_ENV = "LOSSFORGE_TEST_KEY"
MT = load_mt_bench(DATA / "mt_bench")[:3]  # questions 81, 82, 83
SCORES = {("81", 1): 8, ("81", 2): 6, ("82", 1): 3, ("82", 2): 9, ("83", 1): 5, ("83", 2): 7}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-SECRET123")


def match(qid: str, turn: int) -> str:
    return rf"ans-{qid}-one(?![\s\S]*ans-{qid}-two)" if turn == 1 else rf"ans-{qid}-two"


def steps(*, failing: tuple[str, int] | None = ("82", 1)) -> list[dict]:
    out = []
    for (qid, turn), score in SCORES.items():
        if (qid, turn) == failing:
            out.append({"match": match(qid, turn), "kind": "server_error", "status": 400})
        else:
            out.append({"match": match(qid, turn), "text": f"Reasoned. Rating: [[{score}]]"})
    return out


def answers_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    write_answers(path, {q.id: [f"ans-{q.id}-one", f"ans-{q.id}-two"] for q in MT}, model_id="mine")
    return path


def test_a_failed_call_is_recorded_written_named_and_retried_alone(tmp_path: Path) -> None:
    out = tmp_path / "score.json"
    with FakeServer(steps()) as server:
        run = JudgeRun(benchmark="mt_bench", questions=DATA / "mt_bench", answers=answers_file(tmp_path), limit=3,
                       judge=JudgeSettings(model="judge", max_workers=3), base_url=server.base_url,
                       api_key_env=KEY_ENV, max_retries=0, cache=tmp_path / "cache.sqlite")
        with pytest.raises(JudgeIncomplete) as caught:
            run_judge(run, out=out)
        assert len(server.chat_requests) == 6
        message = str(caught.value)
        assert message.startswith("1 of 6 judge calls failed (question 82 turn 1: ")
        assert "HTTP 400" in message and str(out) in message and "asks only for the failed ones" in message

        # the partial result: written, with the failure named and the five judged turns scored
        written = json.loads(out.read_text())
        summary = written["summary"]
        assert summary == json.loads(json.dumps(caught.value.summary))  # the raised error carries it too
        assert summary["complete"] is False and summary["n_failed"] == 1 and summary["n"] == 5
        [failure] = summary["failed"]
        assert failure["question_id"] == "82" and failure["turn"] == 1 and "HTTP 400" in failure["error"]
        assert summary["mean"] == pytest.approx((8 + 6 + 9 + 5 + 7) / 5)
        failed = [j for j in written["result"]["judgements"] if j["error"]]
        assert [(j["question_id"], j["turn"], j["score"]) for j in failed] == [("82", 1, None)]
        assert "SECRET" not in out.read_text()

        # the next run asks only for the failed turn
        server.add({"match": match("82", 1), "text": "Now it works. Rating: [[3]]"})
        again = run_judge(run, out=out)
        assert len(server.chat_requests) == 7 and again["new_calls"] == 1
    assert again["complete"] is True and again["failed"] == [] and again["n"] == 6
    assert again["mean"] == pytest.approx(sum(SCORES.values()) / 6)
    assert json.loads(out.read_text())["summary"]["complete"] is True


def test_the_judge_stops_calling_after_failures_in_a_row(tmp_path: Path) -> None:
    every_call_fails = [{"kind": "server_error", "status": 404}] * 6  # e.g. a judge model the endpoint lacks
    settings = JudgeSettings(model="no-such-model", max_workers=1, max_failures_in_a_row=3)
    answers = {q.id: [f"ans-{q.id}-one", f"ans-{q.id}-two"] for q in MT}
    with FakeServer(every_call_fails) as server, JudgementCache(tmp_path / "c.sqlite") as cache:
        client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=0, timeout=10)
        score = MTBenchJudge(client, settings, cache=cache).score(MT, answers)
        assert len(server.chat_requests) == 3
    assert score.n == 0 and score.n_failed == 6 and score.calls == 3 and score.mean is None
    assert [f.error.startswith("not attempted: the judge stopped after 3 failed calls in a row") for f in score.failed] == \
        [False, False, False, True, True, True]
    assert "HTTP 404" in score.failed[0].error and "HTTP 404" in score.failed[-1].error


def test_a_failed_pairwise_game_is_recorded_with_its_position(tmp_path: Path) -> None:
    arena = load_arena_hard(DATA / "arena_hard")[:2]
    answers = {q.id: [f"model-{q.id}"] for q in arena}
    baseline = {q.id: [f"base-{q.id}"] for q in arena}
    first, second = arena[0].id, arena[1].id
    script = [
        {"match": rf"model-{first}[\s\S]*base-{first}", "text": "[[A>B]]"},
        {"match": rf"base-{first}[\s\S]*model-{first}", "text": "[[B>A]]"},
        {"match": rf"model-{second}[\s\S]*base-{second}", "text": "[[A=B]]"},
        {"match": rf"base-{second}[\s\S]*model-{second}", "kind": "server_error", "status": 400},
    ]
    with FakeServer(script) as server, JudgementCache(tmp_path / "p.sqlite") as cache:
        client = LLMClient(server.base_url, api_key_env=KEY_ENV, max_retries=0, timeout=10)
        score = PairwiseJudge(client, JudgeSettings(model="judge"), cache=cache).score(arena, answers, baseline)
    assert score.n_failed == 1 and score.n_invalid == 0
    [failure] = score.failed
    assert (failure.question_id, failure.model_position, failure.turn) == (second, "B", None)
    assert "HTTP 400" in failure.error
    game = next(g for g in score.games if g.error)
    assert (game.question_id, game.model_position, game.verdict) == (second, "B", None)


def test_the_judge_command_writes_the_partial_result_and_exits_1(tmp_path: Path) -> None:
    answers = answers_file(tmp_path)
    out = tmp_path / "score.json"

    def judge(server: FakeServer) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lossforge.cli", "judge", "--benchmark", "mt_bench", "--questions",
             str(DATA / "mt_bench"), "--answers", str(answers), "--limit", "3", "--judge-model", "judge",
             "--base-url", server.base_url, "--api-key-env", KEY_ENV, "--cache", str(tmp_path / "cache.sqlite"),
             "--out", str(out)],
            capture_output=True, text=True, timeout=120, env={**os.environ, KEY_ENV: "sk-test-SECRET123"},
        )

    with FakeServer(steps()) as server:
        done = judge(server)
        assert done.returncode == 1, done.stderr
        assert "question 82 turn 1" in done.stderr and "HTTP 400" in done.stderr
        printed = json.loads(done.stdout)
        assert printed["complete"] is False and printed["failed"][0]["question_id"] == "82"
        assert json.loads(out.read_text())["summary"] == printed
        server.add({"match": match("82", 1), "text": "Rating: [[3]]"})
        again = judge(server)
        assert again.returncode == 0, again.stderr
        assert len(server.chat_requests) == 7  # the retry asked only for the failed turn
    assert json.loads(again.stdout)["complete"] is True and json.loads(again.stdout)["n"] == 6
    assert "SECRET" not in done.stdout + done.stderr + again.stdout + again.stderr
