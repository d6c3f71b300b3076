"""LLM judges: MT-Bench single-answer grading and Arena-Hard style pairwise comparison.

``MTBenchJudge(client, settings).score(questions, answers)`` rates every turn of every question 1-10
(``[[8]]``), showing reference answers for math, reasoning and coding, and returns the mean (over all
rated turns, as FastChat's ``show_result.py`` reports it: unrated turns left out), the mean per turn and
per category. With ``prompts=load_judge_prompts(FILE)`` it sends FastChat's own MT-Bench judge prompts
instead of the project's (``judge_prompts.JudgePrompts``). ``PairwiseJudge(...).score(
questions, answers, baseline_answers)`` judges each question twice with the two answers swapped, and
returns the weighted win rate against the baseline with a seeded bootstrap interval (``winrate``).
``answers`` map a question id to the model's answer per turn (``evaluators.answers`` writes them).

What it guarantees
------------------
* Judgements are cached (``JudgementCache``) by question, answer(s) and their order, reference, judge
  model, temperature and ``PROMPT_VERSION``: a second run over the same answers sends no request. Only
  readable verdicts are cached; an unreadable one is recorded as invalid (score None), left out of the
  means and win rate, counted in ``n_invalid``, and asked again on the next run. Pairwise, a question
  counts only when both its games have a verdict (as Arena-Hard-Auto's show_result.py); ``n_games`` and
  ``counts`` are those of the counted questions, ``by_category`` their win rate per category.
* At most ``settings.max_workers`` requests are in flight (a thread pool); results come back in question
  order whatever order the calls finish in.
* Costs go through ``llm.cost``: ``budget.check()`` before each call (``BudgetExhausted`` cancels the
  calls not yet started and is raised once the running ones finish; finished ones stay cached), and each
  call's usage is charged. Calls check the budget concurrently, so it can be overshot by up to
  ``max_workers`` calls. ``usd`` and ``calls`` in a score are this run's new spending.
* Every answer judged must be given: a question without an answer (or a turn) raises ``ValueError``
  before any call is made.
* A judge call that fails (``LLMError``: an HTTP error after the SDK's retries, an unreadable body) does
  not end the run: it is recorded on its judgement (``error``, score None) and in the score's ``failed``
  list (question id, turn or position, the error), the others go on, and the score says how many failed
  (``n_failed``). Failures are not cached, so the next run over the same answers asks only for them.
  After ``settings.max_failures_in_a_row`` failures with no success between them (a wrong model name, a
  revoked key), the calls not yet started are not made and are recorded as failed with that reason.

It does not retry a judge that answered but without a verdict beyond the SDK's HTTP retries.
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from statistics import fmean
from typing import Callable, Literal, Mapping, Sequence

from pydantic import BaseModel, Field

from lossforge.evaluators.judge_cache import JudgementCache, judgement_key
from lossforge.evaluators.judge_prompts import (
    PROMPT_VERSION,
    JudgePrompts,
    pairwise_messages,
    parse_rating,
    parse_verdict,
    single_messages,
)
from lossforge.evaluators.questions import Question
from lossforge.evaluators.winrate import bootstrap_interval, outcome, question_counts, win_rate
from lossforge.llm.client import LLMClient, LLMError
from lossforge.llm.cost import Budget
from lossforge.settings.judge import JudgeSettings

__all__ = [
    "JudgeFailure",
    "MTBenchJudge",
    "MTBenchScore",
    "PairwiseGame",
    "PairwiseJudge",
    "PairwiseScore",
    "SingleJudgement",
]

Answers = Mapping[str, Sequence[str]]


class JudgeFailure(BaseModel):
    """A judge call that failed: which question (and turn, or the model's position), and the error."""

    question_id: str
    turn: int | None = None
    model_position: Literal["A", "B"] | None = None
    error: str


class SingleJudgement(BaseModel):
    question_id: str
    category: str
    turn: int
    score: float | None
    judgement: str
    cached: bool
    error: str | None = None


class MTBenchScore(BaseModel):
    mean: float | None
    turn_means: dict[int, float]
    by_category: dict[str, float]
    n: int
    n_invalid: int
    n_failed: int = 0
    judge_model: str
    prompt_version: str = PROMPT_VERSION
    usd: float = 0.0
    calls: int = 0
    judgements: list[SingleJudgement]
    failed: list[JudgeFailure] = Field(default_factory=list)


class PairwiseGame(BaseModel):
    question_id: str
    model_position: Literal["A", "B"]
    verdict: str | None
    outcome: str | None
    judgement: str
    cached: bool
    error: str | None = None


class PairwiseScore(BaseModel):
    win_rate: float | None
    interval: tuple[float, float] | None
    confidence: float
    n_questions: int
    n_games: int
    n_invalid: int
    n_failed: int = 0
    counts: dict[str, int]
    by_category: dict[str, float] = Field(default_factory=dict, description="Win rate per question category.")
    judge_model: str
    prompt_version: str = PROMPT_VERSION
    usd: float = 0.0
    calls: int = 0
    games: list[PairwiseGame]
    failed: list[JudgeFailure] = Field(default_factory=list)


@dataclass(frozen=True)
class _Task:
    key: str
    kind: str
    question_id: str
    messages: list[dict[str, str]]
    readable: Callable[[str], bool]


@dataclass(frozen=True)
class _Outcome:
    text: str
    cached: bool
    error: str | None = None


class _Judge:
    """Shared machinery: cache lookup, bounded concurrency, budget."""

    def __init__(
        self,
        client: LLMClient,
        settings: JudgeSettings,
        *,
        cache: JudgementCache | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.cache = cache
        self.budget = budget or Budget()
        self.prompt_version = PROMPT_VERSION
        self._spent_lock = threading.Lock()

    def _key(self, **parts: object) -> str:
        s = self.settings
        return judgement_key(judge_model=s.model, temperature=s.temperature, prompt_version=self.prompt_version, **parts)

    def _run(self, tasks: list[_Task]) -> tuple[list[_Outcome], float, int]:
        """The outcome per task in order (judge text and whether cached, or the error of a failed call),
        plus this run's USD and number of calls (failed calls count: they may be billed)."""
        results: list[_Outcome | None] = [None] * len(tasks)
        todo: list[int] = []
        for i, task in enumerate(tasks):
            text = self.cache.get(task.key) if self.cache is not None else None
            if text is not None and task.readable(text):
                results[i] = _Outcome(text, True)
            else:
                todo.append(i)
        spent: dict[str, float] = {"usd": 0.0, "calls": 0, "in_a_row": 0}
        stopped: list[str] = []

        def call(i: int) -> None:
            task = tasks[i]
            with self._spent_lock:
                if stopped:
                    results[i] = _Outcome("", False, stopped[0])
                    return
            self.budget.check()
            try:
                result = self.client.chat(
                    task.messages,
                    model=self.settings.model,
                    temperature=self.settings.temperature,
                    max_tokens=self.settings.max_tokens,
                    stream=self.settings.stream,
                )
            except LLMError as error:
                message = str(error) or type(error).__name__
                with self._spent_lock:
                    spent["calls"] += 1
                    spent["in_a_row"] += 1
                    limit = self.settings.max_failures_in_a_row
                    if spent["in_a_row"] >= limit and not stopped:
                        stopped.append(f"not attempted: the judge stopped after {limit} failed calls in a row "
                                       f"(the last: {message})")
                results[i] = _Outcome("", False, message)
                return
            usd = self.budget.charge(result.usage)
            with self._spent_lock:
                spent["usd"] += usd
                spent["calls"] += 1
                spent["in_a_row"] = 0
            if self.cache is not None and task.readable(result.text):
                self.cache.put(task.key, result.text, kind=task.kind, judge_model=self.settings.model,
                               prompt_version=self.prompt_version, question_id=task.question_id)
            results[i] = _Outcome(result.text, False)

        if todo:
            with ThreadPoolExecutor(max_workers=self.settings.max_workers, thread_name_prefix="judge") as pool:
                futures = [pool.submit(call, i) for i in todo]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    for future in futures:
                        future.cancel()
                    wait(futures)
                    raise failed.exception()  # type: ignore[misc]
        return [r for r in results if r is not None], spent["usd"], int(spent["calls"])


class MTBenchJudge(_Judge):
    """Single-answer grading of every turn (see the module docstring).

    ``prompts``: FastChat's judge prompts (``load_judge_prompts``) instead of the project's own; their
    ``version`` replaces ``PROMPT_VERSION`` in the cache keys and in the score.
    """

    def __init__(
        self,
        client: LLMClient,
        settings: JudgeSettings,
        *,
        cache: JudgementCache | None = None,
        budget: Budget | None = None,
        prompts: JudgePrompts | None = None,
    ) -> None:
        super().__init__(client, settings, cache=cache, budget=budget)
        self.prompts = prompts
        if prompts is not None:
            self.prompt_version = prompts.version

    def score(self, questions: Sequence[Question], answers: Answers) -> MTBenchScore:
        """Rate every turn of ``questions`` (answers: question id -> answer per turn); see the module
        docstring. Raises ``ValueError`` for a missing answer or turn (before any call), ``BudgetExhausted``
        when the budget runs out; a failed call is recorded in the score, not raised."""
        refs = set(self.settings.reference_categories)
        missing = [q.id for q in questions if len(answers.get(q.id, ())) < len(q.turns)]
        if missing:
            raise ValueError(f"no answer (or too few turns) for questions {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        tasks: list[_Task] = []
        meta: list[tuple[Question, int]] = []
        for q in questions:
            shown = list(answers[q.id])[: len(q.turns)]
            with_ref = q.category in refs and bool(q.reference)
            for turn in range(1, len(q.turns) + 1):
                key = self._key(
                    protocol="single", question_id=q.id, turns=q.turns[:turn], answers=shown[:turn], turn=turn,
                    reference=q.reference[:turn] if with_ref and q.reference else None,
                )
                if self.prompts is not None:
                    messages = self.prompts.single_messages(q, shown, turn, with_reference=with_ref)
                else:
                    messages = single_messages(q, shown, turn, with_reference=with_ref)
                tasks.append(_Task(key, "single", q.id, messages, lambda t: parse_rating(t) is not None))
                meta.append((q, turn))
        outcomes, usd, calls = self._run(tasks)
        judgements = [
            SingleJudgement(question_id=q.id, category=q.category, turn=turn,
                            score=None if o.error is not None else parse_rating(o.text),
                            judgement=o.text, cached=o.cached, error=o.error)
            for (q, turn), o in zip(meta, outcomes)
        ]
        failed = [JudgeFailure(question_id=j.question_id, turn=j.turn, error=j.error)
                  for j in judgements if j.error is not None]
        valid = [j for j in judgements if j.score is not None]
        by_turn: dict[int, list[float]] = {}
        by_category: dict[str, list[float]] = {}
        for j in valid:
            by_turn.setdefault(j.turn, []).append(j.score)  # type: ignore[arg-type]
            by_category.setdefault(j.category, []).append(j.score)  # type: ignore[arg-type]
        return MTBenchScore(
            mean=fmean(j.score for j in valid) if valid else None,  # type: ignore[misc]
            turn_means={t: fmean(v) for t, v in sorted(by_turn.items())},
            by_category={c: fmean(v) for c, v in sorted(by_category.items())},
            n=len(valid),
            n_invalid=len(judgements) - len(valid) - len(failed),
            n_failed=len(failed),
            judge_model=self.settings.model,
            prompt_version=self.prompt_version,
            usd=usd,
            calls=calls,
            judgements=judgements,
            failed=failed,
        )


class PairwiseJudge(_Judge):
    """Pairwise judging against a baseline, both orders per question (see the module docstring)."""

    def __init__(
        self,
        client: LLMClient,
        settings: JudgeSettings,
        *,
        cache: JudgementCache | None = None,
        budget: Budget | None = None,
        strong_weight: float = 3.0,
        bootstrap_rounds: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> None:
        super().__init__(client, settings, cache=cache, budget=budget)
        self.strong_weight = strong_weight
        self.bootstrap_rounds = bootstrap_rounds
        self.confidence = confidence
        self.seed = seed

    def score(self, questions: Sequence[Question], answers: Answers, baseline_answers: Answers) -> PairwiseScore:
        missing = [q.id for q in questions if not answers.get(q.id) or not baseline_answers.get(q.id)]
        if missing:
            raise ValueError(f"no model or baseline answer for questions {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        tasks: list[_Task] = []
        meta: list[tuple[Question, Literal["A", "B"]]] = []
        for q in questions:
            mine, theirs = answers[q.id][0], baseline_answers[q.id][0]
            for position in ("A", "B"):
                a, b = (mine, theirs) if position == "A" else (theirs, mine)
                key = self._key(protocol="pairwise", question_id=q.id, prompt=q.turns[0], answer_a=a, answer_b=b)
                tasks.append(_Task(key, "pairwise", q.id, pairwise_messages(q, a, b), lambda t: parse_verdict(t) is not None))
                meta.append((q, position))  # type: ignore[arg-type]
        outcomes, usd, calls = self._run(tasks)
        games: list[PairwiseGame] = []
        for (q, position), o in zip(meta, outcomes):
            verdict = parse_verdict(o.text) if o.error is None else None
            games.append(PairwiseGame(question_id=q.id, model_position=position, verdict=verdict,
                                      outcome=outcome(verdict, position), judgement=o.text, cached=o.cached,
                                      error=o.error))
        failed = [JudgeFailure(question_id=g.question_id, model_position=g.model_position, error=g.error)
                  for g in games if g.error is not None]
        per_question: dict[str, list[str | None]] = {}
        for game in games:
            per_question.setdefault(game.question_id, []).append(game.outcome)
        # as Arena-Hard-Auto's show_result.py: a question counts only when both its games have a verdict
        complete = {qid for qid, o in per_question.items() if all(x is not None for x in o)}
        counts = [question_counts(o, self.strong_weight) for qid, o in per_question.items() if qid in complete]
        by_category: dict[str, float] = {}
        for category in sorted({q.category for q in questions if q.id in complete}):
            rows = [question_counts(per_question[q.id], self.strong_weight) for q in questions
                    if q.category == category and q.id in complete]
            by_category[category] = win_rate(*(sum(c[i] for c in rows) for i in range(3)))
        totals = tuple(sum(c[i] for c in counts) for i in range(3)) if counts else (0.0, 0.0, 0.0)
        rate = win_rate(*totals) if counts else None
        interval = (
            bootstrap_interval(counts, rounds=self.bootstrap_rounds, seed=self.seed, confidence=self.confidence)
            if counts else None
        )
        counted = [g for g in games if g.question_id in complete]
        tally = {name: sum(1 for g in counted if g.outcome == name) for name in ("strong_win", "win", "tie", "loss", "strong_loss")}
        n_invalid = sum(1 for g in games if g.outcome is None and g.error is None)
        return PairwiseScore(
            win_rate=rate,
            interval=interval,
            confidence=self.confidence,
            n_questions=len(counts),
            n_games=len(counted),
            n_invalid=n_invalid,
            n_failed=len(failed),
            counts=tally,
            by_category=by_category,
            judge_model=self.settings.model,
            usd=usd,
            calls=calls,
            games=games,
            failed=failed,
        )
