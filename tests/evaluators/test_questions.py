"""Question sets: the real MT-Bench and Arena-Hard files, the hub layouts, and clear errors."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lossforge.evaluators.questions import QuestionError, load_arena_hard, load_mt_bench, normalise_row

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repository


def test_mt_bench_has_80_two_turn_questions_with_references_for_math_reasoning_coding() -> None:
    questions = load_mt_bench(DATA / "mt_bench")
    assert len(questions) == 80 and questions[0].id == "81" and questions[-1].id == "160"
    assert Counter(q.category for q in questions) == {c: 10 for c in
        ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")}
    assert all(len(q.turns) == 2 for q in questions)
    refs = {q.category for q in questions if q.reference}
    assert {"math", "reasoning", "coding"} <= refs
    by_id = {q.id: q for q in questions}
    first_ref = json.loads((DATA / "mt_bench" / "reference_answer_gpt-4.jsonl").read_text().splitlines()[0])
    assert by_id[str(first_ref["question_id"])].reference == first_ref["choices"][0]["turns"]


def test_arena_hard_has_500_single_turn_prompts() -> None:
    questions = load_arena_hard(DATA / "arena_hard" / "question-v0.1.jsonl")
    assert len(questions) == 500 and len({q.id for q in questions}) == 500
    assert all(len(q.turns) == 1 and q.turns[0] for q in questions)
    assert questions[0].id == "328c149ed45a41c0b9d6f14659e63599" and questions[0].cluster


def test_hub_layouts_are_normalised() -> None:
    h4 = normalise_row({"prompt_id": 81, "prompt": ["a", "b"], "category": "math", "reference": ["r1", "r2"]})
    assert (h4.id, h4.turns, h4.reference) == ("81", ["a", "b"], ["r1", "r2"])
    arena = normalise_row({"question_id": "x1", "category": "arena-hard-v0.1", "turns": [{"content": "solve"}]})
    assert (arena.id, arena.turns, arena.reference) == ("x1", ["solve"], None)
    assert normalise_row({"question_id": 3, "turns": ["q"], "reference": ["", ""]}).reference is None


def test_bad_files_raise_errors_that_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(QuestionError, match="does not exist"):
        load_mt_bench(tmp_path)
    (tmp_path / "question.jsonl").write_text('{"question_id": 1, "turns": ["a"]}\n{"question_id": 1, "turns": ["b"]}\n')
    with pytest.raises(QuestionError, match="duplicate question id 1"):
        load_mt_bench(tmp_path)
    (tmp_path / "question.jsonl").write_text('{"question_id": 1, "turns": ["a"]}\nnot json\n')
    with pytest.raises(QuestionError, match=r"question.jsonl:2: not JSON"):
        load_mt_bench(tmp_path)
    (tmp_path / "question.jsonl").write_text('{"category": "x"}\n')
    with pytest.raises(QuestionError, match="row 1: a question needs an id"):
        load_mt_bench(tmp_path)
    with pytest.raises(QuestionError, match="exactly one"):
        load_arena_hard()


# -- Arena-Hard-Auto's current layout (data/arena-hard-v0.1/, data/arena-hard-v2.0/) -----------------------


def test_arena_hard_version_folders_of_the_upstream_layout() -> None:
    # before issue 14, a version folder was searched for question-v0.1.jsonl: "does not exist"
    v01 = load_arena_hard(DATA / "arena_hard" / "v0.1")
    assert v01 == load_arena_hard(DATA / "arena_hard" / "question-v0.1.jsonl")  # the same 500 prompts
    assert load_arena_hard(DATA / "arena_hard" / "v0.1" / "question.jsonl") == v01
    assert {q.category for q in v01} == {"arena-hard-v0.1"}
    v20 = load_arena_hard(DATA / "arena_hard" / "v2.0")
    assert len(v20) == 750 and len({q.id for q in v20}) == 750
    assert Counter(q.category for q in v20) == {"hard_prompt": 500, "creative_writing": 250}
    first = json.loads((DATA / "arena_hard" / "v2.0" / "question.jsonl").read_text().splitlines()[0])
    assert (v20[0].id, v20[0].category, v20[0].turns) == (first["uid"], "hard_prompt", [first["prompt"]])
    assert all(len(q.turns) == 1 and q.turns[0] for q in v20)


def test_the_older_arena_hard_layout_keeps_working(tmp_path: Path) -> None:
    # the folder that holds question-v0.1.jsonl (and the version folders) reads question-v0.1.jsonl
    assert [q.id for q in load_arena_hard(DATA / "arena_hard")] == [q.id for q in load_arena_hard(DATA / "arena_hard" / "v0.1")]
    # the older upstream rows: question_id and turns as [{"content": ...}]
    rows = [json.loads(line) for line in (DATA / "arena_hard" / "question-v0.1.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "question-v0.1.jsonl").write_text("".join(
        json.dumps({"question_id": r["uid"], "category": r["category"], "cluster": r["cluster"],
                    "turns": [{"content": r["prompt"]}]}) + "\n" for r in rows))
    old = load_arena_hard(tmp_path)
    assert [(q.id, q.turns[0], q.cluster) for q in old] == [(r["uid"], r["prompt"], r["cluster"]) for r in rows]


def test_a_folder_without_an_arena_hard_question_file_names_the_version_folders(tmp_path: Path) -> None:
    for version in ("arena-hard-v0.1", "arena-hard-v2.0"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "question.jsonl").write_text('{"uid": "a", "prompt": "p"}\n')
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuestionError, match=r"no Arena-Hard question file \(question.jsonl or question-v0.1.jsonl\) "
                                            r"in .*version folders arena-hard-v0.1, arena-hard-v2.0: pass one of them"):
        load_arena_hard(tmp_path)
    with pytest.raises(QuestionError, match="pass Arena-Hard-Auto's version folder"):
        load_arena_hard(tmp_path / "empty")
    with pytest.raises(QuestionError, match="does not exist"):
        load_arena_hard(tmp_path / "nothing.jsonl")
    assert [q.id for q in load_arena_hard(tmp_path / "arena-hard-v2.0")] == ["a"]
