"""Settings of LLM calls: prices, budget limits, prompt limits, and the ``[proposer.llm]`` section.

Kept apart from the proposer and the client so that the configuration (``lossforge.config``) embeds them
without importing LangGraph, torch or openai: this module imports only pydantic.

* ``Price``, ``PriceTable``: US dollars per million tokens per model; ``PriceTable.cost(usage)`` prices one
  call (``lossforge.llm.cost.Budget`` charges with it). ``BudgetLimits``: dollars, tokens, calls.
* ``PromptLimits``: how much of the archive a proposal prompt may show.

* ``ModelChoice``: one ensemble member (name, weight, temperature, max_tokens).
* ``LLMProposerSettings``: how the proposer prompts and reads its models (and how far it raises the token
  limit when an answer is cut off).
* ``LLMProposerConfig``: those settings plus the endpoint (``base_url``, ``api_key_env``, timeout,
  retries), the price table and the budget limits; unknown keys are errors, as everywhere in the config.

What it guarantees
------------------
* Model names are unique; weights are positive.
* With a dollar limit (``budget.max_usd``), every model that may be called (the ensemble and the
  reflection model) must have a price (exact, prefix or default), checked when the configuration is
  loaded, so a run cannot discover an unpriced model only after paying for a call.
* The API key itself is never part of the configuration, only the name of the variable that holds it.
"""
from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from lossforge.errors import UsageError
from lossforge.settings.base import Strict

__all__ = ["BudgetLimits", "LLMProposerConfig", "LLMProposerSettings", "ModelChoice", "Price", "PriceError",
           "PriceTable", "PromptLimits", "TokenUsage"]


class TokenUsage(Protocol):
    """What pricing reads of one call's usage (``lossforge.llm.client.Usage`` is one)."""

    model: str
    prompt_tokens: int
    completion_tokens: int


class PriceError(UsageError):
    """A model the price table cannot price while a dollar limit is in force."""


class Price(Strict):
    """US dollars per one million tokens."""

    input: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    output: float = Field(0.0, ge=0, description="USD per 1M completion tokens")


class PriceTable(Strict):
    """Prices per model (exact name or name prefix) and an optional default."""

    models: dict[str, Price] = Field(default_factory=dict)
    default: Price | None = None

    def price(self, model: str) -> Price | None:
        if model in self.models:
            return self.models[model]
        prefixes = [name for name in self.models if model.startswith(name)]
        if prefixes:
            return self.models[max(prefixes, key=len)]
        return self.default

    def cost(self, usage: TokenUsage, *, strict: bool = False) -> float:
        """USD of one call; a model without a price costs 0, or raises ``PriceError`` when ``strict``."""
        price = self.price(usage.model)
        if price is None:
            if strict:
                raise PriceError(
                    f"no price for model {usage.model!r}: add it to the price table (USD per 1M input/output "
                    "tokens) or set a default price"
                )
            return 0.0
        return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000


class BudgetLimits(Strict):
    """Limits on spending; ``None`` means no limit of that kind."""

    max_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_calls: int | None = Field(None, ge=0)


class PromptLimits(Strict):
    """How much of the archive a prompt may show."""

    max_chars: int = Field(16_000, ge=4_000, description="Upper bound on the user message, in characters.")
    max_code_chars: int = Field(1_800, ge=200, description="Each code listing is cut to this many characters.")
    n_best: int = Field(3, ge=0, le=20)
    n_diverse: int = Field(3, ge=0, le=20)
    n_failures: int = Field(3, ge=0, le=20)


class ModelChoice(Strict):
    """One model of the ensemble: its weight and sampling settings."""

    name: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int | None = Field(4096, ge=16, description="Completion token limit per call.")


class LLMProposerSettings(Strict):
    """How the LLM proposer prompts and reads its models."""

    models: list[ModelChoice] = Field(default_factory=lambda: [ModelChoice(name="gpt-4o-mini")], min_length=1)
    structured_output: bool = Field(True, description="Send a json_schema response_format (servers that support it).")
    stream: bool = Field(True, description="Stream tokens (and emit them as events).")
    stream_chunk_chars: int = Field(16, ge=1, description="Coalesce streamed pieces into events of about this size.")
    prompt: PromptLimits = PromptLimits()
    reflect: bool = Field(True, description="Write a model reflection after each result (else the offline one).")
    reflection_model: str | None = Field(None, description="Model for reflections; default: drawn from `models`.")
    reflection_max_tokens: int = Field(300, ge=16)
    reflection_temperature: float = Field(0.3, ge=0, le=2)
    max_reflection_chars: int = Field(800, ge=50)
    truncation_retries: int = Field(
        2, ge=0, le=5,
        description="An answer cut off at the token limit (finish_reason 'length') is asked again at most this many "
        "times, each time with twice the limit, up to max_tokens_ceiling; every try is charged.",
    )
    max_tokens_ceiling: int = Field(
        32_768, ge=16, description="The largest completion token limit a retry of a cut-off answer asks for."
    )

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[ModelChoice]) -> list[ModelChoice]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return models

    def model_names(self) -> list[str]:
        """Every model this proposer may call."""
        names = [m.name for m in self.models]
        if self.reflection_model and self.reflection_model not in names:
            names.append(self.reflection_model)
        return names


class LLMProposerConfig(LLMProposerSettings):
    """The ``[proposer.llm]`` section: the proposer's settings, its endpoint, prices and budget."""

    base_url: str = Field("https://api.openai.com/v1", description="Any OpenAI-compatible endpoint.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Name of the environment variable holding the key; none for local servers.")
    timeout: float = Field(120.0, gt=0, description="Seconds per HTTP request.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of 429/5xx/timeouts (the SDK's backoff).")
    stream_usage: bool = Field(True, description="Ask for usage in streamed answers (stream_options.include_usage).")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="How the token limit is sent; OpenAI's reasoning models want max_completion_tokens."
    )
    prices: PriceTable = PriceTable()
    budget: BudgetLimits = BudgetLimits()

    @model_validator(mode="after")
    def _priced(self) -> "LLMProposerConfig":
        if self.budget.max_usd is not None:
            unpriced = [name for name in self.model_names() if self.prices.price(name) is None]
            if unpriced:
                raise ValueError(
                    f"budget.max_usd is set but models {unpriced} have no price: add them to prices.models "
                    "(USD per 1M input/output tokens) or set prices.default"
                )
        return self

    def settings(self) -> LLMProposerSettings:
        """Only the proposer's settings (without endpoint, prices and budget)."""
        return LLMProposerSettings.model_validate(self.model_dump(include=set(LLMProposerSettings.model_fields)))
