"""`--judge-prompts`: FastChat's own MT-Bench judge prompts, sent exactly as FastChat sends them, and the
warning when math, reasoning and coding questions come without their reference answers.

The reference is FastChat's behaviour, restated below in our own code with its upstream path (no FastChat
code is kept here): the prompt choice of ``gen_judgment.py`` (``NEED_REF_CATS``, ``make_judge_single``) and
the template filling of ``common.py``'s ``run_judge_single``, over the real files in ../shared/data/mt_bench.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.evaluators.answers import write_answers
from lossforge.evaluators.judge_prompts import JudgePromptsError, load_judge_prompts
from lossforge.evaluators.judge_run import run_judge
from lossforge.settings.judge import JudgeEndpoint, JudgeRun, JudgeRunError
from lossforge.settings.judge import JudgeSettings
from lossforge.llm.fake_server import FakeServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PROMPTS = DATA / "mt_bench" / "judge_prompts.jsonl"
REFERENCES = DATA / "mt_bench" / "reference_answer_gpt-4.jsonl"
KEY_ENV = "LOSSFORGE_TEST_KEY"
IDS = ["81", "101", "111", "121", "131"]  # writing, reasoning, math, coding, extraction


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-SECRET123")


def rows(path: Path) -> dict[str, dict]:
    return {str(r["question_id"]): r for r in map(json.loads, path.read_text().splitlines()) if r}


# -- the reference: lm-sys/FastChat fastchat/llm_judge (commit 0e6d3e4), restated -----------------------
#: common.py ``NEED_REF_CATS``: the categories judged against GPT-4's reference answer.
NEED_REF_CATS = frozenset({"math", "reasoning", "coding", "arena-hard-200"})


def fastchat_messages(question: dict, answer: dict, ref_answer: dict | None, multi_turn: bool,
                      judge_prompts: dict[str, dict]) -> list[dict[str, str]]:
    """The messages FastChat sends to judge one answer of one model.

    gen_judgment.py (``make_judge_single`` and the matches it makes) picks the prompt: ``single-math-v1``
    for a question whose category is in NEED_REF_CATS, else ``single-v1``; the ``-multi-turn`` variant of
    either when judging turn 2. Only the reference-based prompts get the reference answer. common.py
    ``run_judge_single`` fills the prompt's ``prompt_template`` with ``str.format``: for turn 1 the fields
    ``question`` and ``answer`` (the first turn of each), for turn 2 ``question_1``, ``question_2``,
    ``answer_1`` and ``answer_2``; with a reference also ``ref_answer_1`` (and ``ref_answer_2`` for turn
    2), from the reference's first choice. The judge gets the prompt's ``system_prompt`` as the system
    message, then the filled template as the user message (``conv.to_openai_api_messages()``).
    """
    with_reference = question["category"] in NEED_REF_CATS
    name = ("single-math-v1" if with_reference else "single-v1") + ("-multi-turn" if multi_turn else "")
    prompt = judge_prompts[name]
    turns = (1, 2) if multi_turn else (1,)
    asked, answered = question["turns"], answer["choices"][0]["turns"]
    if multi_turn:
        fields = {**{f"question_{t}": asked[t - 1] for t in turns}, **{f"answer_{t}": answered[t - 1] for t in turns}}
    else:
        fields = {"question": asked[0], "answer": answered[0]}
    if with_reference and ref_answer is not None:
        fields.update({f"ref_answer_{t}": ref_answer["choices"][0]["turns"][t - 1] for t in turns})
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def subset(tmp_path: Path, ids: list[str], *, references: bool) -> Path:
    """A question folder with real MT-Bench rows (and, if asked, the reference file beside them)."""
    folder = tmp_path / ("with_refs" if references else "bare")
    folder.mkdir()
    lines = [line for line in (DATA / "mt_bench" / "question.jsonl").read_text().splitlines()
             if str(json.loads(line)["question_id"]) in ids]
    (folder / "question.jsonl").write_text("\n".join(lines) + "\n")
    if references:
        (folder / "reference_answer").mkdir()
        shutil.copy(REFERENCES, folder / "reference_answer" / "gpt-4.jsonl")
    return folder


def answers_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "answers.jsonl"
    # braces and a format-like field in an answer must reach the judge as written
    write_answers(path, {i: [f"ans-{i}-one {{answer}}", f"ans-{i}-two"] for i in ids}, model_id="m")
    return path


def script(ids: list[str], rating: int = 6) -> list[dict]:
    return [step for i in ids for step in (
        {"match": rf"ans-{i}-one(?![\s\S]*ans-{i}-two)", "text": f"Fine. Rating: [[{rating}]]"},
        {"match": rf"ans-{i}-two", "text": f"Fine. Rating: [[{rating}]]"},
    )]


def test_judge_prompts_are_sent_exactly_as_fastchat_sends_them(tmp_path: Path) -> None:
    folder = subset(tmp_path, IDS, references=True)
    answers = answers_file(tmp_path, IDS)
    with FakeServer(script(IDS)) as server:
        run = JudgeRun(benchmark="mt_bench", questions=folder, answers=answers, judge_prompts=PROMPTS,
                       judge=JudgeSettings(model="gpt-4", max_workers=2), base_url=server.base_url,
                       api_key_env=KEY_ENV, cache=tmp_path / "cache.sqlite")
        summary = run_judge(run)
        sent = [r.messages() for r in server.chat_requests]
        # the project's own prompt is another cache key: judging again with it asks the judge again
        server.add(*script(IDS, rating=4))
        default = run_judge(run.model_copy(update={"judge_prompts": None}))
    assert summary["mean"] == 6 and summary["complete"] and summary["warnings"] == []
    assert summary["prompt_version"] == load_judge_prompts(PROMPTS).version and summary["prompt_version"].startswith("fastchat-")
    assert default["mean"] == 4 and default["new_calls"] == 10 and default["prompt_version"] == "lossforge-judge-1"

    judge_prompts = {r["name"]: r for r in map(json.loads, PROMPTS.read_text().splitlines())}
    questions, refs, model = rows(folder / "question.jsonl"), rows(REFERENCES), rows(answers)
    expected = [fastchat_messages(questions[i], model[i], refs.get(i), turn == 2, judge_prompts)
                for i in IDS for turn in (1, 2)]
    assert sorted(map(json.dumps, sent)) == sorted(map(json.dumps, expected))
    # each of the four prompts was used, and the math one carries GPT-4's reference answer
    systems = {m[0]["content"] for m in sent}
    assert systems == {judge_prompts[n]["system_prompt"] for n in judge_prompts if judge_prompts[n]["type"] == "single"}
    math_first = next(m for m in sent if "ans-111-one" in m[1]["content"] and "ans-111-two" not in m[1]["content"])
    assert refs["111"]["choices"][0]["turns"][0] in math_first[1]["content"]
    assert "ans-111-one {answer}" in math_first[1]["content"]


def test_a_bad_judge_prompt_file_is_refused_before_any_call(tmp_path: Path) -> None:
    lines = PROMPTS.read_text().splitlines()
    without = tmp_path / "without.jsonl"
    without.write_text("\n".join(line for line in lines if json.loads(line)["name"] != "single-math-v1"))
    with pytest.raises(JudgePromptsError, match="no prompt named 'single-math-v1'"):
        load_judge_prompts(without)
    typo = tmp_path / "typo.jsonl"
    typo.write_text("\n".join(line.replace("{answer_2}", "{answer_two}") for line in lines))
    with pytest.raises(JudgePromptsError, match=r"single-v1-multi-turn' asks for \['answer_two'\]"):
        load_judge_prompts(typo)
    with pytest.raises(JudgePromptsError, match="does not exist"):
        load_judge_prompts(tmp_path / "nope.jsonl")
    pairwise_only = tmp_path / "pair.jsonl"
    pairwise_only.write_text("\n".join(line.replace('"type": "single"', '"type": "pairwise"') for line in lines))
    with pytest.raises(JudgePromptsError, match='must have "type": "single"'):
        load_judge_prompts(pairwise_only)

    answers = answers_file(tmp_path, IDS)
    with FakeServer([]) as server:
        run = JudgeRun(benchmark="mt_bench", questions=subset(tmp_path, IDS, references=True), answers=answers,
                       judge_prompts=without, judge=JudgeSettings(model="j"), base_url=server.base_url,
                       api_key_env=KEY_ENV, cache=tmp_path / "c.sqlite")
        with pytest.raises(JudgeRunError, match="single-math-v1"):
            run_judge(run)
        with pytest.raises(JudgeRunError, match="goes with --benchmark mt_bench"):
            run_judge(run.model_copy(update={"benchmark": "arena_hard", "questions": DATA / "arena_hard" / "v0.1",
                                             "judge_prompts": PROMPTS}))
    assert server.requests == []


def test_questions_without_their_references_are_judged_with_a_warning(tmp_path: Path) -> None:
    bare = subset(tmp_path, IDS, references=False)
    answers = answers_file(tmp_path, IDS)
    with FakeServer(script(IDS) * 3) as server:
        run = JudgeRun(benchmark="mt_bench", questions=bare, answers=answers, judge=JudgeSettings(model="j"),
                       base_url=server.base_url, api_key_env=KEY_ENV, cache=tmp_path / "c.sqlite")
        summary = run_judge(run)
        [warning] = summary["warnings"]
        assert "3 coding, math, reasoning questions (101, 111, 121) are judged without GPT-4's reference answers" in warning
        assert "3 of them against only the short answer in question.jsonl" in warning
        assert "reference_answer/gpt-4.jsonl" in warning and "--references" in warning
        refs = rows(REFERENCES)
        math_first = next(r.prompt_text() for r in server.chat_requests if "ans-111-one" in r.prompt_text())
        assert "Area is 3" in math_first and refs["111"]["choices"][0]["turns"][0] not in math_first

        # --references FILE: the same questions now see GPT-4's answers, and nothing is warned
        fixed = run_judge(run.model_copy(update={"references": REFERENCES}))
        assert fixed["warnings"] == [] and fixed["new_calls"] == 6  # the 3 questions x 2 turns, with references now
        assert any(refs["121"]["choices"][0]["turns"][0] in r.prompt_text() for r in server.chat_requests)
        # the reference file found beside question.jsonl (FastChat's layout) works the same way
        beside = run_judge(run.model_copy(update={"questions": subset(tmp_path, IDS, references=True)}))
        assert beside["warnings"] == [] and beside["new_calls"] == 0

        with pytest.raises(JudgeRunError, match="reference answer file .* does not exist"):
            run_judge(run.model_copy(update={"references": tmp_path / "missing.jsonl"}))

    # the same through the judge's configuration (the tools' [judge], the search's [train.judge])
    endpoint = JudgeEndpoint(base_url="http://127.0.0.1:1/v1", model="j", mt_bench_questions=bare,
                             mt_bench_references=REFERENCES, judge_prompts=PROMPTS)
    configured = endpoint.run("mt-bench", answers=answers)
    assert configured.references == REFERENCES and configured.judge_prompts == PROMPTS


def test_the_judge_command_takes_judge_prompts_and_prints_the_warning(tmp_path: Path) -> None:
    bare = subset(tmp_path, IDS, references=False)
    answers = answers_file(tmp_path, IDS)
    with FakeServer(script(IDS)) as server:
        done = subprocess.run(
            [sys.executable, "-m", "lossforge.cli", "judge", "--benchmark", "mt_bench", "--questions", str(bare),
             "--answers", str(answers), "--judge-prompts", str(PROMPTS), "--judge-model", "gpt-4",
             "--base-url", server.base_url, "--api-key-env", KEY_ENV, "--cache", str(tmp_path / "c.sqlite")],
            capture_output=True, text=True, timeout=120, env={**os.environ, KEY_ENV: "sk-test"},
        )
        sent = [r.messages()[1]["content"] for r in server.chat_requests]
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["mean"] == 6 and summary["judge_prompts"] == str(PROMPTS) and len(sent) == 10
    assert "warning:" in done.stderr and "101, 111, 121" in done.stderr and "--references" in done.stderr
    # the writing question gets single-v1 and its multi-turn form; the math question, warned about, the
    # math prompts with only question.jsonl's short answer as its reference
    first_81 = next(u for u in sent if "ans-81-one" in u and "ans-81-two" not in u)
    second_111 = next(u for u in sent if "ans-111-two" in u)
    assert first_81.startswith("[Instruction]") and "Reference" not in first_81
    assert second_111.startswith("<|The Start of Reference Answer|>") and "Area is 3" in second_111
