"""Behavioural fingerprints of candidate losses, for rejecting duplicates before the expensive stages.

Two candidates can differ in code and still be the same loss (``-F.logsigmoid(z)`` and
``F.softplus(-z)``; a renamed variable; ``loss + 3``). The fingerprint compares what a loss *does*:

What this module guarantees
---------------------------
* ``fingerprint(fn, beta)`` is a deterministic list of ``FINGERPRINT_LENGTH`` floats (same torch build,
  same inputs, same numbers), computed in float64 on a fixed grid:

  - ``MARGINS``: margins from -20 to 20 in logit units (``m = beta * ((pc - rc) - (pr - rr))``), each
    realised by every decomposition in ``DECOMPOSITIONS`` (split between chosen and rejected, all on the
    chosen side, all on the rejected side, all in the reference, and split at a much lower log-prob
    level), so a loss that depends on chosen and rejected log-probs separately, or on their absolute
    level, differs from one that depends on the margin only. Values are laid out margin-major:
    ``value[i * len(DECOMPOSITIONS) + j]`` is margin ``MARGINS[i]`` under decomposition ``j``.
  - then, for each of ``GRAD_MARGINS``, the derivative of the batch's summed loss with respect to that
    pair's margin (split decomposition), i.e. the training signal the pair receives.

  Every point is evaluated in its own call, as pair 0 of a batch whose other ``len(BACKGROUND)`` pairs
  are fixed: per-pair losses give exactly their value at the point; batch-coupled losses (batch means,
  variances, sorting) still give a stable fingerprint, and unlike a batch of one pair, variance-based
  losses do not degenerate. Values are rounded to ``SIGNIFICANT_DIGITS`` significant digits; non-finite
  values become the sentinels ``NAN_SENTINEL`` / ``+-INF_SENTINEL`` so the list is JSON-safe.
* ``same_behaviour(a, b)`` is True when ``a`` and ``b`` differ at most by an additive constant (and,
  with ``allow_scale=True``, a positive scale), within ``rtol``/``atol``.
* ``nearest(fp, others)`` gives the index of the closest fingerprint and a scale-free distance.
* ``code_hash(code)`` identifies the source text itself (blank lines and trailing spaces ignored): the
  archive stores it and the search rejects a candidate whose code is already there before it compares
  fingerprints.

The duplicate rule (a choice, documented here)
----------------------------------------------
``loss + c`` has exactly the same gradients as ``loss``, so it trains identically under any optimiser:
it is always a duplicate (values are compared after removing their mean difference; the gradient part is
compared as is). ``k * loss`` with ``k > 0`` has gradients scaled by ``k``: under SGD that is a different
learning rate (a different training run); under Adam it is nearly invisible (Adam normalises by the
gradient's running RMS; only epsilon and gradient clipping see the scale). Because the search may use
either optimiser and a rescaled loss may interact with gradient clipping and the KL budget, positive
scaling is NOT a duplicate by default; pass ``allow_scale=True`` to treat it as one (sensible when the
trainer is Adam-only without clipping). Negative scale is never a duplicate (it flips preferences).

What it does not guarantee
--------------------------
* Two losses that agree on the grid but differ elsewhere (beyond +-20 logits, or on log-prob levels not
  sampled) are reported as the same. The grid covers the region where training happens.
* Fingerprints are comparable only when computed with the same ``beta`` and the same
  ``FINGERPRINT_VERSION`` (different lengths never compare equal).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Callable, Iterator, Sequence

import torch

__all__ = [
    "FINGERPRINT_VERSION",
    "MARGINS",
    "DECOMPOSITIONS",
    "GRAD_MARGINS",
    "BACKGROUND",
    "FINGERPRINT_LENGTH",
    "NUM_VALUES",
    "fingerprint",
    "same_behaviour",
    "fingerprint_distance",
    "nearest",
]

FINGERPRINT_VERSION = 1

#: Margins in logit units (``beta * margin``) at which the loss is evaluated.
MARGINS: tuple[float, ...] = (
    -20.0, -15.0, -10.0, -7.0, -5.0, -3.0, -2.0, -1.0, -0.5, -0.25, 0.0,
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0,
)

#: Margins (logit units) at which d(batch loss)/d(margin of the pair) is recorded.
GRAD_MARGINS: tuple[float, ...] = (-5.0, -1.0, 0.0, 1.0, 5.0)

#: Margins (logit units) of the fixed background pairs that share each evaluation's batch.
BACKGROUND: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0)

SIGNIFICANT_DIGITS = 8
NAN_SENTINEL = 1.0e301
INF_SENTINEL = 1.0e300
_SENTINEL_THRESHOLD = 1.0e299


def _split(h: float) -> tuple[float, float, float, float]:
    b = -abs(h) / 2 - 5.0
    return b + h / 2, b - h / 2, b, b


def _chosen_side(h: float) -> tuple[float, float, float, float]:
    b = -max(h, 0.0) - 5.0
    return b + h, b, b, b


def _rejected_side(h: float) -> tuple[float, float, float, float]:
    b = -max(-h, 0.0) - 5.0
    return b, b - h, b, b


def _in_reference(h: float) -> tuple[float, float, float, float]:
    b = -max(-h, 0.0) - 5.0
    return b, b, b - h, b


def _split_deep(h: float) -> tuple[float, float, float, float]:
    b = -abs(h) / 2 - 300.0
    return b + h / 2, b - h / 2, b - 7.0, b - 7.0


#: Ways to realise a log-ratio margin ``h`` as (policy_chosen, policy_rejected, reference_chosen,
#: reference_rejected) log-probs, all <= -1 (valid log-probabilities).
DECOMPOSITIONS: tuple[tuple[str, Callable[[float], tuple[float, float, float, float]]], ...] = (
    ("split", _split),
    ("chosen_side", _chosen_side),
    ("rejected_side", _rejected_side),
    ("in_reference", _in_reference),
    ("split_deep", _split_deep),
)

NUM_VALUES = len(MARGINS) * len(DECOMPOSITIONS)
FINGERPRINT_LENGTH = NUM_VALUES + len(GRAD_MARGINS)


def _round(value: float) -> float:
    if math.isnan(value):
        return NAN_SENTINEL
    if math.isinf(value):
        return INF_SENTINEL if value > 0 else -INF_SENTINEL
    if value == 0.0:
        return 0.0
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _batch(point: tuple[float, float, float, float], beta: float) -> list[torch.Tensor]:
    rows = [point] + [_split(m / beta) for m in BACKGROUND]
    return [torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in range(4)]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread for the duration (restoring the previous count).

    The check suite and fingerprints work on tensors of a few dozen elements: threading only adds
    overhead, and on a busy machine an OpenMP barrier waiting for a descheduled thread makes a 3 us op
    take 10 ms. Note: torch's thread count is process-wide, so this briefly affects other threads.
    """
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def fingerprint(fn: Callable[..., torch.Tensor], beta: float = 0.1) -> list[float]:
    """The loss ``fn`` on the fixed grid described in the module docstring (values, then gradients).

    Raises whatever ``fn`` raises; run it on candidates that passed the check suite. Runs torch
    single-threaded (see ``single_threaded``).
    """
    with single_threaded():
        return _fingerprint(fn, beta)


def _fingerprint(fn: Callable[..., torch.Tensor], beta: float) -> list[float]:
    values: list[float] = []
    with torch.no_grad():
        for m in MARGINS:
            for _name, decompose in DECOMPOSITIONS:
                pc, pr, rc, rr = _batch(decompose(m / beta), beta)
                out = fn(pc, pr, rc, rr, beta)
                values.append(_round(float(torch.as_tensor(out).reshape(-1)[0])))
    grads: list[float] = []
    with torch.enable_grad():
        for m in GRAD_MARGINS:
            margin = torch.tensor(m / beta, dtype=torch.float64, requires_grad=True)
            pc, pr, rc, rr = _batch(_split(m / beta), beta)
            # Pair 0's policy log-probs move with its margin as in the split decomposition.
            shift = torch.zeros_like(pc)
            shift[0] = 1.0
            pc = pc + shift * (margin - margin.detach()) / 2
            pr = pr - shift * (margin - margin.detach()) / 2
            out = fn(pc, pr, rc, rr, beta)
            total = out.sum()
            if total.requires_grad:
                (g,) = torch.autograd.grad(total, margin, allow_unused=True)
                # d/d(logit-unit margin) = d/dh * dh/dm = grad * (1 / beta)
                grads.append(_round(float(g) / beta) if g is not None else 0.0)
            else:
                grads.append(0.0)
    return values + grads


def _split_fp(fp: Sequence[float]) -> tuple[list[float], list[float]]:
    return list(fp[:NUM_VALUES]), list(fp[NUM_VALUES:])


def _finite_mask(a: Sequence[float], b: Sequence[float]) -> tuple[bool, list[int]]:
    """(sentinels agree, indices where both are finite)."""
    idx = []
    for i, (x, y) in enumerate(zip(a, b)):
        xs, ys = abs(x) >= _SENTINEL_THRESHOLD, abs(y) >= _SENTINEL_THRESHOLD
        if xs or ys:
            if x != y:
                return False, []
        else:
            idx.append(i)
    return True, idx


def _close(a: Sequence[float], b: Sequence[float], rtol: float, atol: float) -> bool:
    return all(abs(x - y) <= atol + rtol * abs(y) for x, y in zip(a, b))


def same_behaviour(
    fp_a: Sequence[float],
    fp_b: Sequence[float],
    rtol: float = 1e-3,
    atol: float = 1e-4,
    *,
    allow_scale: bool = False,
) -> bool:
    """Whether two fingerprints describe the same training behaviour.

    ``loss + const`` is the same (values compared after removing their mean difference, gradients as
    they are). A positive scale (``2 * loss``) is the same only with ``allow_scale=True`` (see the module
    docstring for why it is off by default). Non-finite entries must agree exactly. Fingerprints of
    different lengths (different versions) are never the same.
    """
    if len(fp_a) != len(fp_b) or len(fp_a) != FINGERPRINT_LENGTH:
        return False
    ok, finite = _finite_mask(fp_a, fp_b)
    if not ok:
        return False
    va, ga = _split_fp(fp_a)
    vb, gb = _split_fp(fp_b)
    fv = [i for i in finite if i < NUM_VALUES]
    fg = [i - NUM_VALUES for i in finite if i >= NUM_VALUES]
    va_f, vb_f = [va[i] for i in fv], [vb[i] for i in fv]
    ga_f, gb_f = [ga[i] for i in fg], [gb[i] for i in fg]
    mean_a = sum(va_f) / len(va_f) if va_f else 0.0
    mean_b = sum(vb_f) / len(vb_f) if vb_f else 0.0
    ca = [x - mean_a for x in va_f]
    cb = [y - mean_b for y in vb_f]
    if allow_scale:
        num = sum(x * y for x, y in zip(ca, cb)) + sum(x * y for x, y in zip(ga_f, gb_f))
        den = sum(y * y for y in cb) + sum(y * y for y in gb_f)
        if den == 0.0:
            scale = 1.0
        else:
            scale = num / den
        if scale <= 0.0:
            return False
        cb = [scale * y for y in cb]
        gb_f = [scale * y for y in gb_f]
    return _close(ca, cb, rtol, atol) and _close(ga_f, gb_f, rtol, atol)


def _normalised(fp: Sequence[float]) -> list[float]:
    values, grads = _split_fp(fp)
    clipped = [max(-1e12, min(1e12, v)) for v in values]
    mean = sum(clipped) / len(clipped) if clipped else 0.0
    return [v - mean for v in clipped] + [max(-1e12, min(1e12, g)) for g in grads]


def fingerprint_distance(fp_a: Sequence[float], fp_b: Sequence[float]) -> float:
    """A scale-free distance: ``||a - b|| / max(||a||, ||b||)`` after removing each fingerprint's mean
    value (so ``loss + const`` is at distance 0); 0 means identical, at most 2. Different lengths: inf."""
    if len(fp_a) != len(fp_b):
        return math.inf
    a, b = _normalised(fp_a), _normalised(fp_b)
    diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    norm = max(math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b)), 1e-12)
    return diff / norm


def nearest(fp: Sequence[float], others: Sequence[Sequence[float]]) -> tuple[int, float]:
    """Index of the fingerprint in ``others`` closest to ``fp`` and its ``fingerprint_distance``;
    ``(-1, inf)`` when ``others`` is empty."""
    best, best_d = -1, math.inf
    for i, other in enumerate(others):
        d = fingerprint_distance(fp, other)
        if d < best_d:
            best, best_d = i, d
    return best, best_d


def code_hash(code: str) -> str:
    """16 hex digits of the SHA-256 of ``code`` with blank lines and trailing spaces removed."""
    normalised = "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())
    return hashlib.sha256(normalised.encode()).hexdigest()[:16]
