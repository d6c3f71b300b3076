"""Question sets for judging a trained model: MT-Bench and Arena-Hard, from files or the Hugging Face hub.

``load_mt_bench(path)`` reads FastChat's ``question.jsonl`` (80 two-turn questions, 8 categories) and, if
present beside it, ``reference_answer/gpt-4.jsonl`` or ``reference_answer_gpt-4.jsonl`` (reference
answers used for math, reasoning and coding). ``load_arena_hard(path)`` reads Arena-Hard-Auto's prompts
(single turn): a version folder of its current layout (``data/arena-hard-v0.1/`` or ``arena-hard-v2.0/``,
each with ``question.jsonl`` and ``model_answer/``), the older ``question-v0.1.jsonl`` or its folder, or
the file itself. ``path`` may be the file or its folder. With
``hf_dataset="owner/name"`` instead, the same loaders read a hub dataset through ``datasets`` (needs
network; not exercised by the tests).

What it guarantees
------------------
* Every question comes back as a ``Question`` with a string ``id`` (FastChat's integer ids become
  strings, so ids from both sets share one type), a ``category``, one or more ``turns`` and, for MT-Bench,
  the ``reference`` answers per turn when known. Order is the file's order.
* Rows are normalised from the known layouts: FastChat (``question_id``, ``turns``), Arena-Hard v0.1
  (``uid``, ``prompt``, ``cluster``), Arena-Hard v2.0 (``uid``, ``prompt``, ``category`` ``hard_prompt`` or
  ``creative_writing``, ``subcategory``), Arena-Hard on the hub (``question_id``, ``turns`` as
  ``[{"content": ...}]``), and
  HuggingFaceH4/mt_bench_prompts (``prompt_id``, ``prompt``, ``reference``). A row that fits none, an empty
  file or a duplicate id raises ``QuestionError`` naming the file and line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, Field

from lossforge.errors import UsageError
from lossforge.settings.judge import NEEDS_REFERENCE

__all__ = [
    "NEEDS_REFERENCE",
    "Question",
    "QuestionError",
    "arena_hard_question_file",
    "load_arena_hard",
    "load_mt_bench",
    "mt_bench_references",
    "normalise_row",
]

MT_BENCH_FILE = "question.jsonl"
MT_BENCH_REFERENCES = ("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl")
#: Arena-Hard-Auto's question file in a folder: the current upstream name (``data/<bench>/question.jsonl``,
#: lmarena/arena-hard-auto gen_judgment.py), then the older single-file name.
ARENA_HARD_FILES = ("question.jsonl", "question-v0.1.jsonl")


class QuestionError(UsageError):
    """A question file or row that cannot be read."""


class Question(BaseModel):
    """One benchmark question: its turns (user messages) and, when known, reference answers per turn."""

    id: str
    category: str = ""
    turns: list[str] = Field(min_length=1)
    reference: list[str] | None = None
    cluster: str | None = None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _texts(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        texts = [_text(v) for v in value]
        if texts and all(t is not None for t in texts):
            return texts  # type: ignore[return-value]
    return None


def normalise_row(row: dict[str, Any]) -> Question:
    """A ``Question`` from one row of any known layout (see the module docstring)."""
    ident = next((row[k] for k in ("question_id", "uid", "prompt_id", "id") if row.get(k) is not None), None)
    turns = _texts(row.get("turns")) or _texts(row.get("prompt"))
    if ident is None or not turns:
        raise QuestionError(f"a question needs an id and at least one turn; got keys {sorted(row)}")
    reference = _texts(row.get("reference")) if row.get("reference") else None
    if reference is not None and not any(r.strip() for r in reference):
        reference = None
    return Question(id=str(ident), category=str(row.get("category") or ""), turns=turns, reference=reference,
                    cluster=row.get("cluster"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise QuestionError(f"{path}:{number}: not JSON ({error})") from error
            if not isinstance(row, dict):
                raise QuestionError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def _questions(rows: Iterable[dict[str, Any]], source: str) -> list[Question]:
    out: list[Question] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        try:
            question = normalise_row(row)
        except (QuestionError, ValueError) as error:
            raise QuestionError(f"{source}, row {number}: {error}") from error
        if question.id in seen:
            raise QuestionError(f"{source}, row {number}: duplicate question id {question.id}")
        seen.add(question.id)
        out.append(question)
    if not out:
        raise QuestionError(f"{source} holds no questions")
    return out


def _resolve(path: Path, filename: str) -> Path:
    path = Path(path).expanduser()
    file = path / filename if path.is_dir() else path
    if not file.exists():
        raise QuestionError(f"question file {file} does not exist")
    return file


def _hub_rows(name: str, split: str | None) -> list[dict[str, Any]]:  # pragma: no cover - needs network
    try:
        from datasets import load_dataset
    except ImportError as error:
        raise QuestionError("loading from the hub needs `datasets` (pip install 'lossforge[gpu]')") from error
    data = load_dataset(name, split=split or "train")
    return [dict(row) for row in data]


def load_mt_bench(
    path: str | Path | None = None,
    *,
    hf_dataset: str | None = None,
    split: str | None = None,
    references: str | Path | None = None,
) -> list[Question]:
    """The MT-Bench questions, with reference answers attached when a reference file is found.

    A question's ``reference`` is its answer in the reference file (``mt_bench_references``) when it has
    one there, else the row's own ``reference`` field (upstream's question.jsonl has a short one, such as
    "Area is 3", for 39 questions; FastChat's judge does not use it). Raises ``QuestionError`` for a
    missing or unreadable file.
    """
    if (path is None) == (hf_dataset is None):
        raise QuestionError("give exactly one of a local path and hf_dataset")
    if hf_dataset is not None:  # pragma: no cover - needs network
        return _questions(_hub_rows(hf_dataset, split), hf_dataset)
    file = _resolve(Path(path), MT_BENCH_FILE)  # type: ignore[arg-type]
    questions = _questions(_read_jsonl(file), str(file))
    _, answers = mt_bench_references(file, references)
    return [q.model_copy(update={"reference": answers.get(q.id, q.reference)}) for q in questions]


def mt_bench_references(
    path: str | Path, references: str | Path | None = None
) -> tuple[Path | None, dict[str, list[str]]]:
    """The reference answer file that goes with the MT-Bench questions at ``path`` (a file or its folder),
    and its answers per turn by question id: ``references`` when given, else FastChat's
    ``reference_answer/gpt-4.jsonl`` or ``reference_answer_gpt-4.jsonl`` beside the questions, else
    ``(None, {})``. Rows are FastChat model_answer rows (``question_id``, ``choices[0].turns``). Raises
    ``QuestionError`` when ``references`` does not exist or a row is not JSON.
    """
    file = _resolve(Path(path), MT_BENCH_FILE)
    ref_file = Path(references).expanduser() if references is not None else next(
        (file.parent / name for name in MT_BENCH_REFERENCES if (file.parent / name).exists()), None
    )
    if ref_file is None:
        return None, {}
    if not ref_file.is_file():
        raise QuestionError(f"reference answer file {ref_file} does not exist")
    answers: dict[str, list[str]] = {}
    for row in _read_jsonl(ref_file):
        choices = row.get("choices") or [{}]
        turns = _texts(choices[0].get("turns"))
        if turns:
            answers[str(row.get("question_id"))] = turns
    return ref_file, answers


def load_arena_hard(
    path: str | Path | None = None, *, hf_dataset: str | None = None, split: str | None = None
) -> list[Question]:
    """The Arena-Hard prompts (single turn), from a file or folder (see ``arena_hard_question_file``) or a hub
    dataset. Each ``Question`` keeps the row's ``category`` (``arena-hard-v0.1``; v2.0: ``hard_prompt`` or
    ``creative_writing``), which picks the baseline it is judged against (``answers.ARENA_HARD_BASELINES``).
    Raises ``QuestionError`` for a missing file, a bad row or a duplicate ``uid``."""
    if (path is None) == (hf_dataset is None):
        raise QuestionError("give exactly one of a local path and hf_dataset")
    if hf_dataset is not None:  # pragma: no cover - needs network
        return _questions(_hub_rows(hf_dataset, split), hf_dataset)
    file = arena_hard_question_file(Path(path))  # type: ignore[arg-type]
    return _questions(_read_jsonl(file), str(file))


def arena_hard_question_file(path: str | Path) -> Path:
    """The Arena-Hard question file that ``path`` names: the file itself, or in a folder ``question.jsonl``
    (upstream's current layout, one folder per version) or else ``question-v0.1.jsonl`` (the older name).

    Raises ``QuestionError`` when there is none, saying which names were looked for and, for a folder that
    holds version folders (upstream's ``data/``), which of them to pass.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        if not path.exists():
            raise QuestionError(f"question file {path} does not exist")
        return path
    for name in ARENA_HARD_FILES:
        if (path / name).is_file():
            return path / name
    versions = sorted(p.name for p in path.iterdir() if p.is_dir() and any((p / n).is_file() for n in ARENA_HARD_FILES))
    hint = (f"; it holds the version folders {', '.join(versions)}: pass one of them, e.g. {path / versions[-1]}"
            if versions else "; pass Arena-Hard-Auto's version folder (data/arena-hard-v0.1 or data/arena-hard-v2.0) "
            "or its question file")
    raise QuestionError(f"no Arena-Hard question file ({' or '.join(ARENA_HARD_FILES)}) in {path}{hint}")
