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

Events (``agent.events.emit``, a no-op outside a graph run): ``token`` {text, purpose, step, model} as
the answer streams (pieces coalesced to about ``stream_chunk_chars``), then ``llm_call`` {purpose,
step, model, prompt_tokens, completion_tokens, usd, seconds, budget}.

What it guarantees
------------------
* The model is drawn by weight from ``settings.models`` with a generator seeded by (seed, context.seed,
  context.step) (reflections: by step and "reflect"), so a re-run step asks the same model; each model
  has its own temperature and token limit. The answer itself is the model's and is not reproducible.
* Budget: before every call ``budget.check()`` raises ``BudgetExhausted`` (no request is sent); after a
  call its usage is charged. A call whose answer cannot be used is still charged.
* Failures raise, never return a half proposal: ``ProposalError`` (with ``raw``, the model's full
  answer, or the server's unreadable body) when there is no usable proposal, ``LLMError`` when the
  endpoint fails after the SDK's retries, ``BudgetExhausted`` when spent. None of their messages, and
  no event, contains the API key.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from lossforge.agent.events import emit
from lossforge.agent.llm_settings import LLMProposerConfig, LLMProposerSettings, ModelChoice
from lossforge.agent.prompts import (
    PROMPT_VERSION,
    proposal_messages,
    proposal_response_format,
    reflection_messages,
)
from lossforge.agent.proposal_parser import ProposalError, parse_proposal
from lossforge.agent.proposer import Proposal, ProposalContext
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


class _TokenSink:
    """Coalesces streamed pieces into ``token`` events."""

    def __init__(self, emitter: Emitter, size: int, **tags: Any) -> None:
        self.emitter, self.size, self.tags = emitter, size, tags
        self.buffer = ""

    def __call__(self, piece: str) -> None:
        self.buffer += piece
        if len(self.buffer) >= self.size or "\n" in piece:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.emitter("token", text=self.buffer, **self.tags)
            self.buffer = ""


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
        result = self._call(
            messages,
            choice.name,
            purpose=purpose,
            step=context.step,
            temperature=choice.temperature,
            max_tokens=choice.max_tokens,
            response_format=response_format,
        )
        parsed = parse_proposal(result.text)
        return Proposal(
            thought=parsed.thought,
            name=parsed.name,
            code=parsed.code,
            parent_ids=[repair.id] if repair is not None else [],
            operator="llm-repair" if repair is not None else "llm",
        )

    def reflect(self, candidate_summary: str, *, step: int = 0, seed: int = 0) -> str:
        """A short reflection on one outcome (``agent.prompts.describe_outcome`` writes the summary)."""
        settings = self.settings
        name = settings.reflection_model or self.pick_model(ProposalContext(step=step, seed=seed), "reflect").name
        result = self._call(
            reflection_messages(candidate_summary),
            name,
            purpose="reflect",
            step=step,
            temperature=settings.reflection_temperature,
            max_tokens=settings.reflection_max_tokens,
            response_format=None,
        )
        text = " ".join(result.text.split())
        if not text:
            raise ProposalError("the model's reflection is empty", result.text)
        limit = settings.max_reflection_chars
        return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."

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
                response_format=response_format,
            )
        except LLMResponseError as error:
            sink.flush()
            prompt = "\n".join(m["content"] for m in messages)
            self._charge(Usage(model=model, prompt_tokens=estimate_tokens(prompt), estimated=True), purpose, step, 0.0)
            raise ProposalError(f"unreadable answer from the LLM endpoint: {error}", error.raw or "") from None
        sink.flush()
        self._charge(result.usage, purpose, step, result.seconds)
        return result

    def _charge(self, usage: Usage, purpose: str, step: int, seconds: float) -> None:
        usd = self.budget.charge(usage)
        self.emitter(
            "llm_call",
            purpose=purpose,
            step=step,
            model=usage.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
            usd=round(usd, 6),
            seconds=round(seconds, 3),
            budget=self.budget.summary(),
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
