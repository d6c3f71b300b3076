"""The base of every settings model: unknown keys are an error, never a silently ignored setting."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """A pydantic model that forbids unknown keys (a typo names the key and the section)."""

    model_config = ConfigDict(extra="forbid")
