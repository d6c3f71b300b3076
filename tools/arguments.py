"""What every tool does with its arguments before any work starts: the context, the input model, the limits.

`validate(Model, **values)` checks the values against the tool's `*Input` model (a None means "the
default"); `check_code` and `check_grid` apply the context's limits (code length, number of seeds and
betas). Each raises `ToolInputError` with a message written for the caller (an LLM), never anything else.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from lossforge.tools.context import ToolContext, ToolInputError, default_context

__all__ = ["tool_context", "validate", "check_code", "check_grid"]


def tool_context(context: ToolContext | None) -> ToolContext:
    return context if context is not None else default_context()


def validate(model: type[BaseModel], **values: Any) -> Any:
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ToolInputError(f"invalid arguments: {problems}") from None


def check_code(code: str, ctx: ToolContext, what: str = "code") -> None:
    limit = ctx.settings.max_code_chars
    if len(code) > limit:
        raise ToolInputError(f"{what} is {len(code)} characters; the limit is {limit}. Send a shorter loss.")
    if not code.strip():
        raise ToolInputError(f"{what} is empty: send the source of one loss function.")


def check_grid(seeds: list[int], betas: list[float], ctx: ToolContext) -> None:
    s = ctx.settings
    if len(seeds) > s.max_seeds:
        raise ToolInputError(f"{len(seeds)} seeds given; the limit is {s.max_seeds}.")
    if len(betas) > s.max_betas:
        raise ToolInputError(f"{len(betas)} betas given; the limit is {s.max_betas}.")
    if any(seed < 0 for seed in seeds):
        raise ToolInputError("seeds must be >= 0.")
    if any(not (0 < b <= 10) or not math.isfinite(b) for b in betas):
        raise ToolInputError("every beta must be in (0, 10].")
    if len(set(seeds)) != len(seeds) or len(set(betas)) != len(betas):
        raise ToolInputError("seeds and betas must not repeat.")
