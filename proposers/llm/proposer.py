"""The LLM-backed proposer: a model (or a weighted ensemble of models) writes each candidate.

``make_llm_proposer(config, seed=..., budget_state=..., on_budget_change=...)`` builds one from the
``[proposer.llm]`` section (``agent.llm_settings``). ``LLMProposer(client, settings, budget=..., seed=...)``
implements the ``Proposer`` seam:
``propose(context) -> Proposal`` builds the prompt (``agent.prompts``: the task, a bounded selection of
the archive, the user's hints), asks the model for a JSON object ``{thought, name, code}`` (with a
``json_schema`` response format when ``settings.structured_output`` is on; a tolerant parser reads the
answer either way), and returns the proposal. ``supports_repair`` is True: when ``context.repair_of`` is
set the prompt shows that candidate's code, its failed check's evidence and hint, and asks for a
diagnosis and a repair. ``reflect(summary) -> str`` writes the short note stored after each result.

Events (``rundir.events.emit``, a no-op outside a graph run): ``token`` {text, channel, purpose, step,
model} as the answer streams (pieces coalesced to about ``stream_chunk_chars``; ``channel`` is
``"reasoning"`` for a reasoning model's reasoning and ``"answer"`` for the answer, so the TUI's reasoning
pane shows both live), then ``llm_call`` {purpose, step, model, prompt_tokens, completion_tokens,
finish_reason, reasoning_chars, usd, seconds, budget}, then ``reasoning`` {purpose, step, model, text,
chars} when the model reasoned, and ``truncated`` {purpose, step, model, max_tokens, completion_tokens,
answer_chars, reasoning_chars, in_reasoning, retry_max_tokens, message} when the answer was cut off.

Reasoning models
----------------
The reasoning (``reasoning_content`` / ``reasoning`` fields, ``<think>`` blocks: ``llm.client`` and
``llm.reasoning``) is never parsed as the proposal: only the final answer is. It is streamed as
``token`` events, stored whole in the ``reasoning`` event (``events.jsonl``) and, for a proposal, in its
``thought`` in the archive after the answer's own thought (cut to ``REASONING_IN_THOUGHT_CHARS``).

Truncated answers
-----------------
An answer cut off at the token limit (``finish_reason == "length"``) is never parsed (a cut JSON object
or code block gives misleading parse, syntax or shape errors): a ``truncated`` event says so, and the
same prompt, with a note asking for a complete answer, is sent again with twice the limit, at most
``settings.truncation_retries`` times and never above ``settings.max_tokens_ceiling`` (a model sent with
no limit: twice the tokens it produced). Each try is a charged call. When the tries are spent it raises
``ProposalError`` saying the answer was cut off, at which limits, and what to raise. A reflection cut off
after some answer text is kept (it is cut to ``max_reflection_chars`` anyway).

What it guarantees
------------------
* The model is drawn by weight from ``settings.models`` with a generator seeded by (seed, context.seed,
  context.step) (reflections: by step and "reflect"), so a re-run step asks the same model; each model
  has its own temperature and token limit. The answer itself is the model's and is not reproducible.
* Budget: before every call ``budget.check()`` raises ``BudgetExhausted`` (no request is sent); after a
  call its usage is charged. A call whose answer cannot be used is still charged.
* Failures raise, never return a half proposal: ``ProposalError`` (with ``raw``, the model's full
  answer with its reasoning in a ``<think>`` block, or the server's unreadable body) when there is no usable proposal, ``LLMError`` when the
  endpoint fails after the SDK's retries, ``BudgetExhausted`` when spent. None of their messages, and
  no event, contains the API key.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from lossforge.rundir.events import EventKind, emit
from lossforge.settings.llm import LLMProposerConfig, LLMProposerSettings, ModelChoice
from lossforge.proposers.llm.prompts import (
    PROMPT_VERSION,
    proposal_messages,
    proposal_response_format,
    reflection_messages,
    truncation_note,
)
from lossforge.proposers.llm.parser import ProposalError, parse_proposal
from lossforge.proposers.base import Proposal, ProposalContext
from lossforge.llm.client import ChatResult, LLMClient, LLMResponseError, Usage, estimate_tokens
from lossforge.llm.cost import Budget, BudgetExhausted, BudgetState

__all__ = [
    "BudgetExhausted",
    "LLMProposer",
    "LLMProposerConfig",
    "LLMProposerSettings",
    "ModelChoice",
    "PROMPT_VERSION",
    "ProposalError",
    "make_llm_proposer",
]

Emitter = Callable[..., None]

#: How much of a model's reasoning a proposal's ``thought`` keeps (the ``reasoning`` event keeps it whole).
REASONING_IN_THOUGHT_CHARS = 20_000


class _TokenSink:
    """Coalesces streamed pieces into ``token`` events, one channel (reasoning or answer) at a time."""

    def __init__(self, emitter: Emitter, size: int, **tags: Any) -> None:
        self.emitter, self.size, self.tags = emitter, size, tags
        self.buffer = ""
        self.channel = "answer"

    def __call__(self, piece: str) -> None:
        self._add("answer", piece)

    def reasoning(self, piece: str) -> None:
        self._add("reasoning", piece)

    def _add(self, channel: str, piece: str) -> None:
        if channel != self.channel:
            self.flush()
            self.channel = channel
        self.buffer += piece
        if len(self.buffer) >= self.size or "\n" in piece:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.emitter(EventKind.TOKEN, text=self.buffer, channel=self.channel, **self.tags)
            self.buffer = ""


class _Truncated(ProposalError):
    """Every try of a call was cut off at the token limit."""


class LLMProposer:
    """Proposes (and repairs) candidates with an LLM; see the module docstring."""

    supports_repair = True

    def __init__(
        self,
        client: LLMClient,
        settings: LLMProposerSettings,
        *,
        budget: Budget | None = None,
        seed: int = 0,
        emitter: Emitter = emit,
    ) -> None:
        self.client = client
        self.settings = settings
        self.budget = budget or Budget()
        self.seed = seed
        self.emitter = emitter

    # -- the seam ----------------------------------------------------------------------------------
    def pick_model(self, context: ProposalContext, purpose: str = "propose") -> ModelChoice:
        """The ensemble member for this step (deterministic in seed, context.seed, step and purpose)."""
        models = self.settings.models
        if len(models) == 1:
            return models[0]
        rng = random.Random(f"llm:{purpose}:{self.seed}:{context.seed}:{context.step}")
        return rng.choices(models, weights=[m.weight for m in models], k=1)[0]

    def propose(self, context: ProposalContext) -> Proposal:
        """One new candidate (a repair of ``context.repair_of`` when it is set)."""
        repair = context.repair_of
        purpose = "repair" if repair is not None else "propose"
        choice = self.pick_model(context)
        messages = proposal_messages(context, self.settings.prompt)
        response_format = proposal_response_format() if self.settings.structured_output else None
        result = self._complete(
            messages,
            choice.name,
            purpose=purpose,
            step=context.step,
            temperature=choice.temperature,
            max_tokens=choice.max_tokens,
            response_format=response_format,
        )
        # the transcript sets the reasoning apart again (in a <think> block), so that an answer that is
        # only reasoning is refused as such, and the error's ``raw`` is the whole evidence
        parsed = parse_proposal(result.transcript())
        return Proposal(
            thought=_with_reasoning(parsed.thought, result.reasoning),
            name=parsed.name,
            code=parsed.code,
            parent_ids=[repair.id] if repair is not None else [],
            operator="llm-repair" if repair is not None else "llm",
        )

    def reflect(self, candidate_summary: str, *, step: int = 0, seed: int = 0) -> str:
        """A short reflection on one outcome (``agent.prompts.describe_outcome`` writes the summary)."""
        settings = self.settings
        name = settings.reflection_model or self.pick_model(ProposalContext(step=step, seed=seed), "reflect").name
        result = self._complete(
            reflection_messages(candidate_summary),
            name,
            purpose="reflect",
            step=step,
            temperature=settings.reflection_temperature,
            max_tokens=settings.reflection_max_tokens,
            response_format=None,
            keep_truncated=True,
        )
        text = " ".join(result.text.split())
        if not text:
            what = "holds only reasoning, no reflection after it" if result.reasoning else "is empty"
            raise ProposalError(f"the model's reflection {what}", result.transcript())
        limit = settings.max_reflection_chars
        if result.truncated and len(text) <= limit:
            return text.rstrip(".") + "..."  # cut off by the token limit: say so
        return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."

    # -- one answer (retried while cut off) ----------------------------------------------------------
    def _complete(
        self,
        messages: list[dict[str, str]],
        model: str,
        *,
        purpose: str,
        step: int,
        temperature: float,
        max_tokens: int | None,
        response_format: dict | None,
        keep_truncated: bool = False,
    ) -> ChatResult:
        """One answer; a cut-off one is asked again with a larger limit (module docstring, "Truncated answers").

        ``keep_truncated``: a cut-off answer that has some answer text is returned as it is (reflections).
        Raises ``ProposalError`` when every try was cut off, and whatever ``_call`` raises.
        """
        limit = max_tokens
        tried: list[int | None] = []
        while True:
            result = self._call(messages, model, purpose=purpose, step=step, temperature=temperature,
                                max_tokens=limit, response_format=response_format)
            if not result.truncated:
                return result
            tried.append(limit)
            larger = self._larger_limit(limit, result)
            keep = keep_truncated and bool(result.text.strip())
            retry = larger if larger is not None and len(tried) <= self.settings.truncation_retries and not keep else None
            in_reasoning = not result.text.strip() and bool(result.reasoning)
            message = _truncation_message(tried, in_reasoning, retry, self.settings, kept=keep)
            self.emitter(
                EventKind.TRUNCATED,
                purpose=purpose,
                step=step,
                model=model,
                max_tokens=limit,
                completion_tokens=result.usage.completion_tokens,
                answer_chars=len(result.text),
                reasoning_chars=len(result.reasoning),
                in_reasoning=in_reasoning,
                retry_max_tokens=retry,
                message=message,
            )
            if keep:
                return result
            if retry is None:
                raise _Truncated(message, result.transcript())
            messages = _with_note(messages, truncation_note(limit))
            limit = retry

    def _larger_limit(self, limit: int | None, result: ChatResult) -> int | None:
        """Twice the limit that cut the answer off (twice the tokens produced without one), at most the
        ceiling; None when that is no larger."""
        base = limit if limit is not None else max(result.usage.completion_tokens, 16)
        larger = min(self.settings.max_tokens_ceiling, 2 * base)
        return larger if larger > base else None

    # -- one call ----------------------------------------------------------------------------------
    def _call(
        self,
        messages: list[dict[str, str]],
        model: str,
        *,
        purpose: str,
        step: int,
        temperature: float,
        max_tokens: int | None,
        response_format: dict | None,
    ) -> ChatResult:
        self.budget.check()
        sink = _TokenSink(self.emitter, self.settings.stream_chunk_chars, purpose=purpose, step=step, model=model)
        try:
            result = self.client.chat(
                messages,
                model=model,
                temperature=temperature,
                max_tokens=max_tokens,
                stream=self.settings.stream,
                on_token=sink,
                on_reasoning=sink.reasoning,
                response_format=response_format,
            )
        except LLMResponseError as error:
            sink.flush()
            prompt = "\n".join(m["content"] for m in messages)
            self._charge(Usage(model=model, prompt_tokens=estimate_tokens(prompt), estimated=True), purpose, step, 0.0)
            raise ProposalError(f"unreadable answer from the LLM endpoint: {error}", error.raw or "") from None
        sink.flush()
        self._charge(result.usage, purpose, step, result.seconds, finish_reason=result.finish_reason,
                     reasoning_chars=len(result.reasoning))
        if result.reasoning:
            self.emitter(EventKind.REASONING, purpose=purpose, step=step, model=model, text=result.reasoning,
                         chars=len(result.reasoning))
        return result

    def _charge(self, usage: Usage, purpose: str, step: int, seconds: float, *, finish_reason: str | None = None,
                reasoning_chars: int = 0) -> None:
        usd = self.budget.charge(usage)
        self.emitter(
            EventKind.LLM_CALL,
            purpose=purpose,
            step=step,
            model=usage.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
            finish_reason=finish_reason,
            reasoning_chars=reasoning_chars,
            usd=round(usd, 6),
            seconds=round(seconds, 3),
            budget=self.budget.summary(),
        )


def _with_reasoning(thought: str, reasoning: str) -> str:
    """The proposal's thought, then the model's reasoning (cut to ``REASONING_IN_THOUGHT_CHARS``)."""
    if not reasoning:
        return thought
    shown = reasoning
    if len(shown) > REASONING_IN_THOUGHT_CHARS:
        shown = (shown[:REASONING_IN_THOUGHT_CHARS].rstrip()
                 + f"\n[... {len(reasoning) - REASONING_IN_THOUGHT_CHARS} more characters in the 'reasoning' event]")
    head = f"{thought}\n\n" if thought else ""
    return f"{head}Model reasoning ({len(reasoning)} characters; kept as a note, not read as the proposal):\n{shown}"


def _with_note(messages: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    """``messages`` with ``note`` appended to the last user message (a new list; the input is unchanged)."""
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = str(message.get("content", "")) + note
            break
    return out


def _truncation_message(tried: list[int | None], in_reasoning: bool, retry: int | None,
                        settings: LLMProposerSettings, *, kept: bool = False) -> str:
    """What happened to a cut-off answer, and what happens next or what to change."""
    limits = ", ".join("the server's default" if t is None else str(t) for t in tried)
    where = " while the model was still reasoning (no answer yet)" if in_reasoning else ""
    text = f"the model's answer was cut off at the token limit{where} (finish_reason 'length'; max_tokens {limits})"
    if kept:
        return f"{text}; kept as it is (a reflection)"
    if retry is not None:
        return f"{text}; asking again with max_tokens {retry}"
    return (
        f"{text}; gave up after {len(tried)} tries (truncation_retries = {settings.truncation_retries}, "
        f"max_tokens_ceiling = {settings.max_tokens_ceiling}): raise the model's max_tokens or "
        "[proposer.llm] max_tokens_ceiling, or ask for shorter answers"
    )


def make_llm_proposer(
    config: LLMProposerConfig,
    *,
    seed: int = 0,
    budget_state: BudgetState | dict | None = None,
    on_budget_change: Callable[[BudgetState], None] | None = None,
    emitter: Emitter = emit,
) -> LLMProposer:
    """An ``LLMProposer`` from the ``[proposer.llm]`` section, its budget resumed from ``budget_state``.

    ``on_budget_change`` receives the budget's state after every charge (e.g. to save it in the
    archive's meta table). Raises ``LLMError`` when the key's environment variable is not set.
    """
    client = LLMClient(
        config.base_url,
        api_key_env=config.api_key_env,
        timeout=config.timeout,
        max_retries=config.max_retries,
        stream_usage=config.stream_usage,
        max_tokens_field=config.max_tokens_field,
    )
    state = BudgetState.model_validate(budget_state) if budget_state is not None else None
    budget = Budget(config.budget, config.prices, state=state, on_change=on_budget_change)
    return LLMProposer(client, config.settings(), budget=budget, seed=seed, emitter=emitter)
