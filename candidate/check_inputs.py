"""What the unit-check suite (``lossforge.candidate.checks``) feeds a candidate and how it calls it: the
fixed-seed log-prob inputs, and the call and backward pass that turn a candidate's error into a check's
failure (``_Fail``) with the candidate line that raised it.

What this module guarantees
---------------------------
* Inputs are deterministic: every generator is seeded from ``SEED`` plus a fixed offset, and every input
  set holds valid log-probs (<= -1) as four tensors of shape ``(batch,)``.
* ``_call`` and ``_backward`` raise ``_Fail`` for an ordinary exception of the candidate, ``MemoryError``
  for running out of memory (also torch's "can't allocate memory"), and let ``PolicyViolation`` and
  non-``Exception`` errors through.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

import torch

from lossforge.candidate.policy import CANDIDATE_FILENAME, PolicyViolation

#: Lowest log-prob of the random inputs (at large beta it is raised; see ``checks._random_low``).
RANDOM_LOW = -80.0
SEED = 1234


class _Fail(Exception):
    """A check failed: evidence and hint for the report."""

    def __init__(self, evidence: str, hint: str = "") -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.hint = hint


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _gen(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)




def _random_logps(batch: int, gen: torch.Generator, dtype: torch.dtype = torch.float32,
                  low: float = RANDOM_LOW, high: float = -1.0) -> list[torch.Tensor]:
    return [(torch.rand(batch, generator=gen, dtype=torch.float64) * (high - low) + low).to(dtype)
            for _ in range(4)]


def _valid(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor) -> list[torch.Tensor]:
    """Shift each side so all log-probs are <= -1, keeping every log-ratio (and so the margin) intact."""
    top_c = torch.clamp(torch.maximum(pc, rc) + 1.0, min=0.0)
    top_r = torch.clamp(torch.maximum(pr, rr) + 1.0, min=0.0)
    return [pc - top_c, pr - top_r, rc - top_c, rr - top_r]


def _margin_inputs(margin_logits: float, beta: float, batch: int, gen: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Pairs whose ``beta * ((pc - rc) - (pr - rr))`` equals ``margin_logits`` exactly (in float64), with
    random reference log-probs and a random split of the margin between chosen and rejected."""
    h = margin_logits / beta
    rc, rr = [torch.rand(batch, generator=gen, dtype=torch.float64) * -79.0 - 1.0 for _ in range(2)]
    s = torch.rand(batch, generator=gen, dtype=torch.float64)
    pc = rc + s * h
    pr = rr - (1.0 - s) * h
    return [t.to(dtype) for t in _valid(pc, pr, rc, rr)]


def _mirror(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    pc, pr, rc, rr = inputs
    return [pr, pc, rr, rc]


# --------------------------------------------------------------------------------------------------
# Calling the candidate
# --------------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _candidate_line(exc: BaseException) -> str:
    """' at line N (`source`)' for the deepest candidate frame of the traceback, or ''."""
    line = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == CANDIDATE_FILENAME:
            line = f" at line {lineno}"
    return line


def _describe_exception(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"raised {type(exc).__name__}{_candidate_line(exc)}: {msg}"


def _call(fn: Callable[..., Any], inputs: list[torch.Tensor], beta: float, what: str) -> Any:
    try:
        return fn(*inputs, beta)
    except PolicyViolation:
        raise
    except BaseException as exc:  # noqa: BLE001 - a candidate may raise anything
        if _is_oom(exc):
            raise MemoryError(str(exc)) from exc
        if not isinstance(exc, Exception):
            raise
        hint = "fix the error; the inputs are four float tensors of shape (batch,) and beta is a float."
        if isinstance(exc, AttributeError):
            hint = ("use a function or method that exists (see the error for the closest names); the inputs are "
                    "four float tensors of shape (batch,) and beta is a float.")
        raise _Fail(f"{what}: {_describe_exception(exc)}", hint) from exc


def _backward(out: torch.Tensor, what: str) -> None:
    try:
        out.sum().backward()
    except BaseException as exc:  # noqa: BLE001
        if _is_oom(exc):
            raise MemoryError(str(exc)) from exc
        if not isinstance(exc, Exception):
            raise
        raise _Fail(f"{what}: backward {_describe_exception(exc)}",
                    "do not modify tensors in place (x += ..., x[i] = ...) on values autograd needs; "
                    "build new tensors instead.") from exc


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _example(inputs: list[torch.Tensor], idx: int) -> str:
    pc, pr, rc, rr = (float(t.detach()[idx]) for t in inputs)
    return f"policy_chosen={_fmt(pc)}, policy_rejected={_fmt(pr)}, reference_chosen={_fmt(rc)}, " \
           f"reference_rejected={_fmt(rr)}"


def _leafs(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    pc, pr, rc, rr = (t.detach().clone() for t in inputs)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    return [pc, pr, rc, rr]


def _nonfinite_summary(t: torch.Tensor) -> str:
    t = t.detach().float()
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    parts = []
    if n_nan:
        parts.append(f"{n_nan} nan")
    if n_inf:
        parts.append(f"{n_inf} inf")
    return " and ".join(parts) + f" of {t.numel()}"
