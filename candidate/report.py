"""The structured result of checking a candidate loss.

A `CheckReport` is what every sandbox backend returns and what the agent feeds back to a proposer: it
names the first failed check, the evidence (values, shapes) and a hint an LLM can act on. It is plain
pydantic so it round-trips through the archive (JSON) and across process boundaries.
"""
from __future__ import annotations

from pydantic import BaseModel, Field


class CheckResult(BaseModel):
    """One named check: passed or not, with evidence and a hint when it failed."""

    name: str
    passed: bool
    evidence: str = ""
    hint: str = ""
    seconds: float = 0.0


class CheckReport(BaseModel):
    """The outcome of the unit-check suite on one candidate's source code."""

    passed: bool
    checks: list[CheckResult] = Field(default_factory=list)
    function_name: str | None = None
    fingerprint: list[float] | None = None
    properties: dict[str, object] = Field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed_check(self) -> str | None:
        """The name of the first failed check, or None when all passed."""
        return next((c.name for c in self.checks if not c.passed), None)

    def summary(self) -> str:
        """A short, LLM-actionable description: 'passed' or the failed check, its evidence and hint."""
        failed = next((c for c in self.checks if not c.passed), None)
        if failed is None:
            return "passed all checks"
        text = f"failed check '{failed.name}': {failed.evidence}"
        if failed.hint:
            text += f" Hint: {failed.hint}"
        return text
