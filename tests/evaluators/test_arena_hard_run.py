"""`lossforge judge --benchmark arena_hard` as a user runs it (a subprocess) on the shipped Arena-Hard data,
against the scripted fake OpenAI server: the upstream layout of v0.1 and v2.0 (version folders, answers in
``messages[].content.answer``), each category's own baseline, and the older layout.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.evaluators.questions import load_arena_hard
from lossforge.llm.fake_server import FakeServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repository
ARENA = DATA / "arena_hard"
KEY_ENV = "LOSSFORGE_TEST_KEY"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]  # not splitlines: prompts hold U+2028


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def upstream_row(uid: str, model: str, prompt: str, answer: str) -> dict:
    """A row of Arena-Hard-Auto's model_answer/<model>.jsonl, as its gen_answer.py writes it."""
    return {"uid": uid, "ans_id": f"id-{uid}", "model": model, "tstamp": 1744155079.0,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": {"answer": answer}}],
            "metadata": {"token_len": len(answer.split())}}


def judge(server: FakeServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: "sk-test-SECRET123"}
    return subprocess.run(
        [sys.executable, "-m", "lossforge.cli", "judge", "--benchmark", "arena_hard", "--judge-model", "judge",
         "--base-url", server.base_url, "--api-key-env", KEY_ENV, "--cache", str(tmp_path / "cache.sqlite"), *args],
        capture_output=True, text=True, timeout=300, env=env,
    )


def verdicts(model_marker: str, baseline_text: str, model_in_a: str, model_in_b: str) -> list[dict]:
    """Two scripted judgements: one for the prompt with the model's answer first (A), one with it second."""
    base = re.escape(baseline_text[:60])
    return [{"match": rf"{re.escape(model_marker)}[\s\S]*{base}", "text": f"My own answer first... {model_in_a}"},
            {"match": rf"{base}[\s\S]*{re.escape(model_marker)}", "text": f"My own answer first... {model_in_b}"}]


def test_v01_runs_on_the_shipped_version_folder_against_gpt_4_0314(tmp_path: Path) -> None:
    # before issue 14: "question file .../v0.1/question-v0.1.jsonl does not exist", and answers in this
    # layout read as empty ("answers missing")
    questions = load_arena_hard(ARENA / "v0.1")[:3]
    gpt4 = {r["uid"]: r["messages"][-1]["content"]["answer"] for r in jsonl(ARENA / "v0.1" / "model_answer" / "gpt-4-0314.jsonl")}
    mine = write_jsonl(tmp_path / "model_answer" / "my-model.jsonl",
                       [upstream_row(q.id, "my-model", q.turns[0], f"my-model answers {q.id}") for q in questions])
    steps = []
    for q, (as_a, as_b) in zip(questions, [("[[A>>B]]", "[[A>B]]"), ("[[a=b]]", "[B>A]"), ("[[B>A]]", "[[A>B]] ... [[A=B]]")]):
        steps += verdicts(f"my-model answers {q.id}", gpt4[q.id], as_a, as_b)
    with FakeServer(steps) as server:
        done = judge(server, tmp_path, "--questions", str(ARENA / "v0.1"), "--answers", str(mine), "--limit", "3",
                     "--out", str(tmp_path / "score.json"))
        prompts = [r.prompt_text() for r in server.chat_requests]
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # by hand: q1 strong win (3) + loss as B (A>B: 1 loss); q2 tie + win as B ([B>A]); q3 loss + tie (last label)
    assert summary["win_rate"] == pytest.approx((3 + 1 + 0.5 * 2) / (3 + 1 + 1 + 1 + 1 + 1))
    assert summary["baselines"] == {"arena-hard-v0.1": "gpt-4-0314"}
    assert (summary["n_questions"], summary["n_games"], summary["n_invalid"]) == (3, 6, 0)
    assert len(prompts) == 6
    for q in questions:  # the real gpt-4-0314 answer and the model's, both orders
        both = [p for p in prompts if gpt4[q.id] in p and f"my-model answers {q.id}" in p]
        assert len(both) == 2 and q.turns[0] in both[0]
    assert "SECRET" not in (tmp_path / "score.json").read_text()


def v20_folder(tmp_path: Path) -> tuple[Path, list, list, dict[str, str]]:
    """An Arena-Hard-Auto v2.0 version folder: real questions (three hard prompts o3-mini answered in the
    shipped sample, two creative-writing prompts), the real o3-mini answers, and gemini-2.0-flash-001
    answers written here (the shipped data has none)."""
    questions = load_arena_hard(ARENA / "v2.0")
    o3_rows = jsonl(ARENA / "v2.0" / "model_answer" / "o3-mini-2025-01-31.head30.jsonl")
    o3 = {r["uid"]: r["messages"][-1]["content"]["answer"] for r in o3_rows}
    hard = [q for q in questions if q.id in o3][:3]
    creative = [q for q in questions if q.category == "creative_writing"][:2]
    rows = {r["uid"]: r for r in jsonl(ARENA / "v2.0" / "question.jsonl")}
    folder = tmp_path / "arena-hard-v2.0"
    write_jsonl(folder / "question.jsonl", [rows[q.id] for q in hard + creative])
    write_jsonl(folder / "model_answer" / "o3-mini-2025-01-31.jsonl", o3_rows)
    gemini = {q.id: f"Gemini's poem for {q.id}: roses are red." for q in creative}
    write_jsonl(folder / "model_answer" / "gemini-2.0-flash-001.jsonl",
                [upstream_row(q.id, "gemini-2.0-flash-001", q.turns[0], gemini[q.id]) for q in creative])
    return folder, hard, creative, {**{q.id: o3[q.id] for q in hard}, **gemini}


def test_v20_judges_each_category_against_its_own_baseline(tmp_path: Path) -> None:
    folder, hard, creative, baseline = v20_folder(tmp_path)
    mine = write_jsonl(tmp_path / "mine.jsonl", [upstream_row(q.id, "mine", q.turns[0], f"mine answers {q.id}") for q in hard + creative])
    steps = []
    for q in hard:  # the model wins every hard prompt slightly
        steps += verdicts(f"mine answers {q.id}", baseline[q.id], "[[A>B]]", "[[B>A]]")
    for q in creative:  # and loses every creative-writing prompt badly
        steps += verdicts(f"mine answers {q.id}", baseline[q.id], "[[B>>A]]", "[[A>>B]]")
    with FakeServer(steps) as server:
        done = judge(server, tmp_path, "--questions", str(folder), "--answers", str(mine))
        prompts = [r.prompt_text() for r in server.chat_requests]
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["baselines"] == {"creative_writing": "gemini-2.0-flash-001", "hard_prompt": "o3-mini-2025-01-31"}
    assert summary["by_category"] == {"creative_writing": 0.0, "hard_prompt": 1.0}
    assert summary["win_rate"] == pytest.approx(6 / (6 + 12))  # 3 x 2 wins; 2 x 2 strong losses of weight 3
    for q in hard:
        assert sum(baseline[q.id] in p and f"mine answers {q.id}" in p for p in prompts) == 2
    for q in creative:
        assert sum(baseline[q.id] in p and f"mine answers {q.id}" in p for p in prompts) == 2
    assert not any("Gemini's poem" in p for q in hard for p in prompts if f"mine answers {q.id}" in p)


def test_v20_shipped_folder_without_the_baselines_says_what_to_put_where(tmp_path: Path) -> None:
    mine = write_jsonl(tmp_path / "mine.jsonl", [upstream_row(q.id, "mine", q.turns[0], "x") for q in load_arena_hard(ARENA / "v2.0")])
    with FakeServer([]) as server:
        done = judge(server, tmp_path, "--questions", str(ARENA / "v2.0"), "--answers", str(mine))
        assert server.requests == []
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "judges hard_prompt (500 questions) against o3-mini-2025-01-31" in message
    assert "o3-mini-2025-01-31.jsonl does not exist" in message and "--baseline FILE" in message


def test_a_baseline_lacking_questions_is_named(tmp_path: Path) -> None:
    # the shipped 30-row o3-mini sample as --baseline for the whole v2.0 set: which questions lack one
    mine = write_jsonl(tmp_path / "mine.jsonl", [upstream_row(q.id, "mine", q.turns[0], "x") for q in load_arena_hard(ARENA / "v2.0")])
    with FakeServer([]) as server:
        done = judge(server, tmp_path, "--questions", str(ARENA / "v2.0"), "--answers", str(mine),
                     "--baseline", str(ARENA / "v2.0" / "model_answer" / "o3-mini-2025-01-31.head30.jsonl"))
    assert done.returncode == 2
    assert "the baseline answers (" in done.stderr and "lack 720 of 750 questions" in " ".join(done.stderr.split())


def test_the_older_layout_keeps_working(tmp_path: Path) -> None:
    # question-v0.1.jsonl and flat answers (choices[0].turns[0].content), the baseline given with --baseline
    questions = load_arena_hard(ARENA / "question-v0.1.jsonl")[:2]
    gpt4 = {r["uid"]: r["messages"][-1]["content"]["answer"] for r in jsonl(ARENA / "v0.1" / "model_answer" / "gpt-4-0314.jsonl")}

    def flat(model: str, answers: dict[str, str]) -> list[dict]:
        return [{"question_id": q.id, "answer_id": f"{model}-{q.id}", "model_id": model,
                 "choices": [{"index": 0, "turns": [{"content": answers[q.id], "token_len": 5}]}]} for q in questions]

    base = write_jsonl(tmp_path / "old" / "gpt-4-0314.jsonl", flat("gpt-4-0314", gpt4))
    mine = write_jsonl(tmp_path / "old" / "mine.jsonl", flat("mine", {q.id: f"old-layout answer {q.id}" for q in questions}))
    steps = []
    for q in questions:
        steps += verdicts(f"old-layout answer {q.id}", gpt4[q.id], "[[A>B]]", "[[A=B]]")
    with FakeServer(steps) as server:
        done = judge(server, tmp_path, "--questions", str(ARENA / "question-v0.1.jsonl"), "--answers", str(mine),
                     "--baseline", str(base), "--limit", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["win_rate"] == pytest.approx((2 + 0.5 * 2) / 4)
    assert summary["baselines"] == {"arena-hard-v0.1": "gpt-4-0314"} and summary["n_games"] == 4
