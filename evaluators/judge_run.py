"""One judging run end to end: questions -> answers (read or generated) -> LLM judge -> a score file.

``run_judge(JudgeRun(...))`` is what ``lossforge judge`` calls. It loads the question set (a local path
or a hub dataset), reads the model's answers (FastChat ``model_answer`` jsonl) or generates them from
``model_path`` (``evaluators.answers``), judges them (MT-Bench single grading, or Arena-Hard pairwise
against ``baseline_answers``) through any OpenAI-compatible endpoint, and returns a JSON-ready summary;
with ``out`` it also writes the full result (every judgement) there.

What it guarantees
------------------
* Problems with the inputs (no answers and no model, an Arena-Hard run without baseline answers,
  answers missing for a question, an answer file in no known layout) raise ``JudgeRunError`` before any
  judge call is made (and before answers are generated).
* Arena-Hard: without ``baseline_answers``, each question is judged against its category's upstream
  baseline (``answers.ARENA_HARD_BASELINES``: v0.1 gpt-4-0314; v2.0 o3-mini-2025-01-31 for hard prompts,
  gemini-2.0-flash-001 for creative writing), read from ``model_answer/`` of the question folder; the
  summary gives the win rate over all counted questions, ``by_category`` and the ``baselines`` used.
* Judgements go through the on-disk cache at ``cache``, so an interrupted or repeated run pays only for
  what it has not judged yet; spending is limited by ``budget`` and priced by ``prices``.
* MT-Bench: ``judge_prompts`` (FastChat's ``judge_prompts.jsonl``) replaces the project's judge prompt by
  FastChat's, chosen per category and turn as FastChat does; ``references`` names the reference answers
  (FastChat's ``reference_answer/gpt-4.jsonl``) when they are not beside ``question.jsonl``. Math,
  reasoning and coding questions left without a reference are judged without one, and the summary's
  ``warnings`` says so and which file to pass.
* A judge call that fails does not lose the others: the full result, with ``complete: false`` and the
  failed questions and their errors under ``failed``, is written to ``out``, then ``JudgeIncomplete``
  (carrying that summary) is raised naming the failed questions. Failed calls are not cached and the rest
  are, so the same run again asks only for the failed ones.
* The summary never contains the API key (only the name of its environment variable).
* The settings (``JudgeRun``, ``JudgeSettings``, ``GenerationSettings``, and ``JudgeEndpoint``, the
  reusable part of a run as configuration) live in ``lossforge.settings.judge``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lossforge.errors import LossforgeError
from lossforge.evaluators.answers import (
    AnswerError,
    answer_questions,
    arena_hard_baselines,
    read_answers,
    write_answers,
)
from lossforge.evaluators.judge_cache import JudgementCache
from lossforge.evaluators.judge_prompts import JudgePrompts, JudgePromptsError, load_judge_prompts
from lossforge.evaluators.llm_judge import MTBenchJudge, PairwiseJudge
from lossforge.evaluators.questions import Question, load_arena_hard, load_mt_bench, mt_bench_references
from lossforge.llm.client import LLMClient
from lossforge.llm.cost import Budget
from lossforge.settings.judge import JudgeRun, JudgeRunError

__all__ = ["JudgeIncomplete", "run_judge"]

#: Where MT-Bench's reference answers live upstream (lm-sys/FastChat, fastchat/llm_judge/data/mt_bench/).
REFERENCE_HINT = "reference_answer/gpt-4.jsonl"


class JudgeIncomplete(LossforgeError, RuntimeError):
    """Some judge calls failed; ``summary`` is the partial result (``failed`` lists them with their errors)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def _questions(run: JudgeRun) -> list[Question]:
    if (run.questions is None) == (run.hf_dataset is None):
        raise JudgeRunError("give either --questions (a local file or folder) or --hf-dataset")
    if run.references is not None:
        if run.benchmark != "mt_bench" or run.questions is None:
            raise JudgeRunError("--references (MT-Bench reference answers) goes with --benchmark mt_bench and --questions")
        if not run.references.expanduser().is_file():
            raise JudgeRunError(f"reference answer file {run.references} does not exist: give FastChat's "
                                f"{REFERENCE_HINT} (data/mt_bench/{REFERENCE_HINT} in lm-sys/FastChat)")
    if run.benchmark == "mt_bench" and run.questions is not None:
        questions = load_mt_bench(run.questions, references=run.references)
    else:
        loader = load_mt_bench if run.benchmark == "mt_bench" else load_arena_hard
        questions = loader(run.questions) if run.questions is not None else loader(hf_dataset=run.hf_dataset)
    return questions[: run.limit] if run.limit else questions


def _prompts(run: JudgeRun, questions: list[Question]) -> JudgePrompts | None:
    """FastChat's judge prompts when asked for, checked against the questions before any call."""
    if run.judge_prompts is None:
        return None
    if run.benchmark != "mt_bench":
        raise JudgeRunError("--judge-prompts takes FastChat's MT-Bench judge prompts (judge_prompts.jsonl) and goes "
                            "with --benchmark mt_bench; Arena-Hard uses its own pairwise prompt")
    try:
        prompts = load_judge_prompts(run.judge_prompts)
    except JudgePromptsError as error:
        raise JudgeRunError(str(error)) from None
    long = [q.id for q in questions if len(q.turns) > 2]
    if long:
        raise JudgeRunError(f"FastChat's judge prompts grade one- and two-turn questions; {len(long)} questions have "
                            f"more turns {long[:5]}: leave out --judge-prompts or those questions")
    return prompts


def _reference_warnings(run: JudgeRun, questions: list[Question]) -> list[str]:
    """A warning when MT-Bench questions that FastChat judges against GPT-4's reference answers
    (``NEED_REF_CATS``: math, reasoning, coding) are judged without them."""
    if run.benchmark != "mt_bench":
        return []
    categories = set(run.judge.reference_categories)
    if run.questions is not None:
        ref_file, gpt4 = mt_bench_references(run.questions, run.references)
        bare = [q for q in questions if q.category in categories and q.id not in gpt4]
        where = (f"{ref_file} has no answer for them" if ref_file is not None
                 else f"no reference answer file was found beside {run.questions}")
    else:
        bare = [q for q in questions if q.category in categories and not q.reference]
        where = f"the dataset {run.hf_dataset} has none for them"
    if not bare:
        return []
    kinds = ", ".join(sorted({q.category for q in bare}))
    short = sum(1 for q in bare if q.reference)
    how = (f"{short} of them against only the short answer in question.jsonl, {len(bare) - short} without any"
           if short else "without any reference")
    return [
        f"{len(bare)} {kinds} questions ({', '.join(q.id for q in bare[:5])}{' ...' if len(bare) > 5 else ''}) are "
        f"judged without GPT-4's reference answers ({how}), unlike MT-Bench, whose judge compares them with "
        f"those: {where}. Pass FastChat's {REFERENCE_HINT} with --references FILE (or put it beside question.jsonl)"
    ]


def _failure_line(failure: Any) -> str:
    where = (f"turn {failure.turn}" if failure.turn is not None
             else f"model in position {failure.model_position}" if failure.model_position else "")
    return f"question {failure.question_id}{' ' + where if where else ''}: {failure.error}"


def _answers(run: JudgeRun, questions: list[Question]) -> dict[str, list[str]]:
    if run.answers is not None:
        if not run.answers.exists():
            raise JudgeRunError(f"answer file {run.answers} does not exist")
        return read_answers(run.answers)
    if run.model_path is None:
        raise JudgeRunError("give the model's answers (--answers) or a model to generate them (--model)")
    answers = answer_questions(run.model_path, questions, run.generation)  # pragma: no cover - real model
    if run.answers_out is not None:  # pragma: no cover
        write_answers(run.answers_out, answers, model_id=run.model_path.name)
    return answers  # pragma: no cover


def _baseline(run: JudgeRun, questions: list[Question]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Arena-Hard: the baseline answer of every question and {category: baseline model}; --baseline FILE
    for all questions, else each category's upstream baseline from the version folder's model_answer/."""
    if run.benchmark != "arena_hard":
        return {}, {}
    if run.baseline_answers is not None:
        if not run.baseline_answers.exists():
            raise JudgeRunError(f"baseline answer file {run.baseline_answers} does not exist")
        return read_answers(run.baseline_answers), {q.category: run.baseline_answers.stem for q in questions}
    if run.questions is None:
        raise JudgeRunError("arena_hard compares against a baseline: give --baseline (its answers, jsonl)")
    return arena_hard_baselines(questions, run.questions)


def run_judge(run: JudgeRun, *, out: Path | None = None) -> dict[str, Any]:
    """Judge the answers of one model (see the module docstring); returns a JSON-ready summary."""
    questions = _questions(run)
    prompts = _prompts(run, questions)  # a bad prompt file stops before answers are generated
    try:
        baseline, baselines = _baseline(run, questions)  # before answers are generated: a missing baseline stops first
        answers = _answers(run, questions)
    except AnswerError as error:
        raise JudgeRunError(str(error)) from None
    needed = [q.id for q in questions if len(answers.get(q.id, ())) < (len(q.turns) if run.benchmark == "mt_bench" else 1)]
    missing_baseline = [q.id for q in questions if run.benchmark == "arena_hard" and not baseline.get(q.id)]
    if needed or missing_baseline:
        problems = []
        if needed:
            problems.append(f"the model's answers ({run.answers or 'generated'}) lack {len(needed)} of "
                            f"{len(questions)} questions {needed[:5]}")
        if missing_baseline:
            source = run.baseline_answers or ", ".join(sorted(set(baselines.values())))
            problems.append(f"the baseline answers ({source}) lack {len(missing_baseline)} of {len(questions)} "
                            f"questions {missing_baseline[:5]}")
        raise JudgeRunError("; ".join(problems) + " (answers are matched by question_id or uid)")
    warnings = _reference_warnings(run, questions)
    client = LLMClient(run.base_url, api_key_env=run.api_key_env, timeout=run.timeout, max_retries=run.max_retries)
    budget = Budget(run.budget, run.prices)
    with client, JudgementCache(run.cache) as cache:
        if run.benchmark == "mt_bench":
            result = MTBenchJudge(client, run.judge, cache=cache, budget=budget, prompts=prompts).score(questions, answers)
            summary: dict[str, Any] = {
                "mean": result.mean,
                "turn_means": result.turn_means,
                "by_category": result.by_category,
                "n": result.n,
                "n_invalid": result.n_invalid,
            }
        else:
            judge = PairwiseJudge(client, run.judge, cache=cache, budget=budget,
                                  bootstrap_rounds=run.bootstrap_rounds, seed=run.seed)
            result = judge.score(questions, answers, baseline)
            summary = {
                "win_rate": result.win_rate,
                "interval": result.interval,
                "confidence": result.confidence,
                "n_questions": result.n_questions,
                "n_games": result.n_games,
                "n_invalid": result.n_invalid,
                "counts": result.counts,
                "by_category": result.by_category,
                "baselines": baselines,
            }
    summary.update(
        benchmark=run.benchmark,
        judge_model=run.judge.model,
        prompt_version=result.prompt_version,
        judge_prompts=str(run.judge_prompts) if run.judge_prompts is not None else None,
        questions=len(questions),
        new_calls=result.calls,
        usd=round(result.usd, 6),
        complete=not result.failed,
        n_failed=result.n_failed,
        failed=[f.model_dump(exclude_none=True) for f in result.failed],
        warnings=warnings,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"summary": summary, "result": result.model_dump()}, indent=2, default=str))
    if result.failed:
        names = "; ".join(_failure_line(f) for f in result.failed[:5]) + (" ..." if len(result.failed) > 5 else "")
        kept = f"the partial result is in {out}" if out is not None else "the partial result is in the summary"
        raise JudgeIncomplete(
            f"{len(result.failed)} of {len(result.judgements if run.benchmark == 'mt_bench' else result.games)} judge "
            f"calls failed ({names}); {kept}; the other judgements are cached, so the same run again asks only for "
            f"the failed ones",
            summary,
        )
    return summary
