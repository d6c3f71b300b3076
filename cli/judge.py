"""`lossforge train | judge`: DPO-train a model with a candidate loss (the 'gpu' extra), and judge a
model's answers with an LLM judge (MT-Bench, Arena-Hard). Exit codes as in `lossforge.cli`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lossforge.cli.common import _fail, _print_json, err


def train(
    loss: Path = typer.Option(..., "--loss", help="A Python file defining one loss function."),
    config: Path = typer.Option(..., "--config", help="Job TOML: JobConfig keys, at the top level or under [job]."),
) -> None:
    """DPO-train a model with a candidate loss (TRL) and print the job's result as JSON."""
    import importlib.util

    missing = [name for name in ("trl", "accelerate", "datasets") if importlib.util.find_spec(name) is None]
    if missing:  # checked up front: trl is imported only once the job runs
        _fail(f"training needs the 'gpu' extra (trl, accelerate, datasets; missing: {', '.join(missing)}): "
              "./scripts/setup.sh gpu")
    try:
        from lossforge.trainer.bench_train import train_command
    except ImportError as error:
        _fail(f"training needs the 'gpu' extra (trl, accelerate, datasets): ./scripts/setup.sh gpu ({error})")
    raise typer.Exit(train_command(loss, config))


def judge(
    benchmark: str = typer.Option(..., "--benchmark", help="mt_bench or arena_hard."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="Question file or folder: FastChat's MT-Bench folder, or an Arena-Hard-Auto version folder (data/arena-hard-v0.1 or arena-hard-v2.0, with question.jsonl and model_answer/; the older question-v0.1.jsonl also works)."),
    hf_dataset: Optional[str] = typer.Option(None, "--hf-dataset", help="Load the questions from this hub dataset instead."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="The model's answers: FastChat model_answer jsonl, or Arena-Hard-Auto's (uid, messages with the answer in content.answer)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Generate the answers with this model (transformers, or vLLM if installed)."),
    answers_out: Optional[Path] = typer.Option(None, "--answers-out", help="Where to write generated answers."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="arena_hard: one answer file to judge every question against. Default: each category's upstream baseline from model_answer/ of the questions folder (v0.1: gpt-4-0314; v2.0: o3-mini-2025-01-31 for hard prompts, gemini-2.0-flash-001 for creative writing)."),
    judge_model: str = typer.Option("gpt-4o", "--judge-model", help="The judge model."),
    base_url: str = typer.Option("https://api.openai.com/v1", "--base-url", help="Any OpenAI-compatible endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key ('' for none)."),
    workers: int = typer.Option(8, "--workers", min=1, help="Judge calls in flight at once."),
    cache: Path = typer.Option(Path("~/.cache/lossforge/judgements.sqlite"), "--cache", help="On-disk judgement cache."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="USD per 1M prompt tokens of the judge."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="USD per 1M completion tokens of the judge."),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Stop before spending more than this (needs the prices)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions (a smoke run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap interval."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write every judgement and the score as JSON here (also a partial result when judge calls failed)."),
    judge_prompts: Optional[Path] = typer.Option(None, "--judge-prompts", help="mt_bench: FastChat's judge_prompts.jsonl (single-v1, single-math-v1 and their multi-turn forms, picked by category and turn as FastChat does), for scores comparable with published MT-Bench numbers. Default: the project's own judge prompt."),
    references: Optional[Path] = typer.Option(None, "--references", help="mt_bench: the reference answers for math, reasoning and coding (FastChat's reference_answer/gpt-4.jsonl), when they are not beside question.jsonl."),
) -> None:
    """Judge a model's answers with an LLM judge: MT-Bench (1-10) or Arena-Hard (win rate vs a baseline).

    Exit 0 when every question was judged; 1 when judge calls failed (the partial result is printed and
    written to --out, the failed questions are named, and running the same command again asks only for
    them) or the budget ran out; 2 on a usage error."""
    from pydantic import ValidationError

    from lossforge.evaluators.judge_run import JudgeIncomplete, run_judge
    from lossforge.settings.judge import JudgeRun, JudgeRunError
    from lossforge.settings.judge import JudgeSettings
    from lossforge.evaluators.questions import QuestionError
    from lossforge.llm.client import LLMError
    from lossforge.llm.cost import BudgetExhausted
    from lossforge.settings.llm import Price, PriceError, PriceTable

    if benchmark not in ("mt_bench", "arena_hard"):
        _fail(f"--benchmark must be mt_bench or arena_hard, not {benchmark!r}")
    if max_usd is not None and (price_in is None or price_out is None):
        _fail("--max-usd needs the judge's prices: --price-in and --price-out (USD per 1M tokens)")
    priced = price_in is not None or price_out is not None
    prices = PriceTable(default=Price(input=price_in or 0.0, output=price_out or 0.0)) if priced else PriceTable()
    try:
        request = JudgeRun(
            benchmark=benchmark, questions=questions, hf_dataset=hf_dataset, answers=answers, model_path=model,
            answers_out=answers_out, baseline_answers=baseline, limit=limit,
            judge=JudgeSettings(model=judge_model, max_workers=workers), base_url=base_url,
            api_key_env=api_key_env or None, prices=prices, budget={"max_usd": max_usd}, cache=cache, seed=seed,
            judge_prompts=judge_prompts, references=references,
        )
        summary = run_judge(request, out=out)
    except JudgeIncomplete as error:
        _print_json(error.summary)
        for warning in error.summary.get("warnings", []):
            err.print(f"warning: {warning}", style="yellow", markup=False)
        _fail(str(error), code=1)
    except ValidationError as error:
        _fail(str(error))
    except (JudgeRunError, QuestionError, PriceError) as error:
        _fail(str(error))
    except BudgetExhausted as error:
        _fail(f"{error}; finished judgements are cached, so a rerun with a larger --max-usd continues", code=1)
    except LLMError as error:
        _fail(str(error), code=1)
    for warning in summary.get("warnings", []):
        err.print(f"warning: {warning}", style="yellow", markup=False)
    _print_json(summary)
