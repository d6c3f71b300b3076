"""Settings of a judging run: the judge model, answer generation, and the judge endpoint of a run config.

* ``JudgeSettings``: the judge model and how it is called (temperature, workers, which MT-Bench
  categories are graded against reference answers).
* ``GenerationSettings``: how answers are sampled from a trained model.
* ``JudgeRun``: everything one judging run needs (``lossforge.evaluators.judge_run.run_judge`` runs it).
* ``JudgeEndpoint``: an OpenAI-compatible judge and the question sets it grades, as the ``[train.judge]``
  configuration (no API key in it, only the variable's name); ``endpoint.run(benchmark, ...)`` makes
  the ``JudgeRun``.

Plain pydantic: importing it loads neither openai, torch nor numpy. Unknown keys are errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lossforge.errors import UsageError
from lossforge.settings.base import Strict
from lossforge.settings.llm import BudgetLimits, PriceTable

__all__ = ["GenerationSettings", "JudgeEndpoint", "JudgeRun", "JudgeRunError", "JudgeSettings", "NEEDS_REFERENCE",
           "normalise_benchmark"]

#: MT-Bench categories whose judge prompt shows the reference answer (as in FastChat).
NEEDS_REFERENCE = frozenset({"math", "reasoning", "coding"})


class GenerationSettings(Strict):
    """How answers are sampled."""

    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    system_prompt: str | None = None


class JudgeSettings(Strict):
    """The judge model and how it is called."""

    model: str = Field(min_length=1)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(2048, ge=16)
    max_workers: int = Field(8, ge=1, le=256)
    stream: bool = False
    reference_categories: list[str] = Field(default_factory=lambda: sorted(NEEDS_REFERENCE))
    max_failures_in_a_row: int = Field(8, ge=1, description="Stop calling after this many failed calls with no success between.")


class JudgeRunError(UsageError):
    """The inputs of a judging run cannot be used; the message says what to change."""


class JudgeRun(Strict):
    """Everything one judging run needs."""

    benchmark: Literal["mt_bench", "arena_hard"]
    questions: Path | None = Field(None, description="Question file or folder; or give hf_dataset.")
    hf_dataset: str | None = None
    answers: Path | None = Field(None, description="The model's answers (FastChat model_answer jsonl).")
    model_path: Path | None = Field(None, description="Generate the answers with this model instead.")
    answers_out: Path | None = Field(None, description="Where generated answers are written.")
    baseline_answers: Path | None = Field(None, description="Arena-Hard: the baseline's answers.")
    references: Path | None = Field(None, description="MT-Bench: reference answers (FastChat reference_answer/gpt-4.jsonl).")
    judge_prompts: Path | None = Field(None, description="MT-Bench: FastChat's judge_prompts.jsonl instead of the project's prompt.")
    limit: int | None = Field(None, ge=1, description="Only the first N questions (a smoke run).")
    judge: JudgeSettings
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    prices: PriceTable = PriceTable()
    budget: BudgetLimits = BudgetLimits()
    cache: Path = Path("~/.cache/lossforge/judgements.sqlite")
    generation: GenerationSettings = GenerationSettings()
    bootstrap_rounds: int = Field(1000, ge=10)
    seed: int = 0


def normalise_benchmark(name: str) -> Literal["mt_bench", "arena_hard"]:
    """'mt-bench' / 'mt_bench' / 'MT-Bench' -> 'mt_bench'; the same for Arena-Hard; ValueError otherwise."""
    key = name.strip().lower().replace("-", "_")
    if key not in ("mt_bench", "arena_hard"):
        raise ValueError(f"unknown benchmark {name!r}: use 'mt-bench' or 'arena-hard'")
    return key  # type: ignore[return-value]


class JudgeEndpoint(Strict):
    """An OpenAI-compatible judge and the question sets it grades, as configuration (no API key in it)."""

    base_url: str = Field(description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1.")
    model: str = Field(min_length=1, description="The judge model.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the key ('' or none: no key).")
    mt_bench_questions: Path | None = Field(None, description="FastChat MT-Bench question.jsonl (or its folder).")
    arena_hard_questions: Path | None = Field(
        None, description="Arena-Hard-Auto version folder (question.jsonl, model_answer/) or question file.")
    arena_hard_baseline: Path | None = Field(
        None, description="Arena-Hard: one baseline answer file (jsonl); none: each category's upstream baseline.")
    mt_bench_references: Path | None = Field(
        None, description="MT-Bench reference answers (FastChat reference_answer/gpt-4.jsonl) when not beside the questions.")
    judge_prompts: Path | None = Field(
        None, description="MT-Bench: FastChat's judge_prompts.jsonl, for scores comparable with published MT-Bench numbers.")
    limit: int | None = Field(None, ge=1, description="Only the first N questions (a smoke run).")
    max_workers: int = Field(8, ge=1, le=256)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    cache: Path | None = Field(None, description="Judgement cache (default: beside the caller's work files).")
    prices: PriceTable = PriceTable()
    budget: BudgetLimits = BudgetLimits()
    generation: GenerationSettings = GenerationSettings()

    def run(self, benchmark: str, *, answers: Path | None = None, model_path: Path | None = None,
            answers_out: Path | None = None, cache: Path | None = None) -> JudgeRun:
        """The ``JudgeRun`` grading ``answers`` (or the answers ``model_path`` generates) on ``benchmark``."""
        bench = normalise_benchmark(benchmark)
        questions = self.mt_bench_questions if bench == "mt_bench" else self.arena_hard_questions
        if questions is None:
            key = "mt_bench_questions" if bench == "mt_bench" else "arena_hard_questions"
            raise JudgeRunError(f"no {bench} question file configured: set the judge's {key}")
        return JudgeRun(
            benchmark=bench, questions=questions, answers=answers, model_path=model_path, answers_out=answers_out,
            baseline_answers=self.arena_hard_baseline if bench == "arena_hard" else None, limit=self.limit,
            references=self.mt_bench_references if bench == "mt_bench" else None,
            judge_prompts=self.judge_prompts if bench == "mt_bench" else None,
            judge=JudgeSettings(model=self.model, max_workers=self.max_workers), base_url=self.base_url,
            api_key_env=self.api_key_env or None, timeout=self.timeout, max_retries=self.max_retries,
            prices=self.prices, budget=self.budget, generation=self.generation,
            cache=cache or self.cache or Path("~/.cache/lossforge/judgements.sqlite"),
        )
