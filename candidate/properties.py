"""The properties the unit-check suite records (never failures): whether a pair's loss depends on the
other pairs of the batch, the time of a call, and the memory a call keeps for its backward pass.

What this module guarantees
---------------------------
* ``_record_properties`` never fails a candidate: a probe that raises records ``None``, except for
  ``MemoryError`` (and torch's "can't allocate memory"), which it raises as ``MemoryError``.
* The inputs are deterministic (``check_inputs``); the timing is not.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from lossforge.candidate.check_inputs import _gen, _is_oom, _margin_inputs, _random_logps, _valid

# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


def _batch_coupled(fn: Callable[..., Any], beta: float) -> bool:
    """Replace pairs 8..63 and see whether the losses of pairs 0..7 move. Probed on random log-probs and on
    small margins (|beta * margin| <= 2 and <= 0.1), where saturating batch statistics are not flat."""

    def small(scale: float) -> Callable[[int, torch.Generator], list[torch.Tensor]]:
        def make(n: int, g: torch.Generator) -> list[torch.Tensor]:
            pc, pr, rc, rr = _margin_inputs(0.0, beta, n, g, dtype=torch.float64)
            pc = pc + (torch.rand(n, generator=g, dtype=torch.float64) * 2.0 - 1.0) * scale / beta
            return [t.float() for t in _valid(pc, pr, rc, rr)]
        return make

    probes = ((80, lambda n, g: _random_logps(n, g)), (82, small(2.0)), (84, small(0.1)))
    for offset, make in probes:
        a = make(64, _gen(offset))
        b = [t.clone() for t in a]
        for t, f in zip(b, make(56, _gen(offset + 1))):
            t[8:] = f
        with torch.no_grad():
            out_a = fn(*a, beta)[:8].double()
            out_b = fn(*b, beta)[:8].double()
        if not torch.allclose(out_a, out_b, rtol=1e-6, atol=1e-7):
            return True
    return False


def _seconds_per_call(fn: Callable[..., Any], beta: float) -> float:
    inputs = _random_logps(64, _gen(90))
    times = []
    with torch.no_grad():
        for _ in range(5):
            t0 = time.perf_counter()
            fn(*inputs, beta)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _autograd_bytes_per_call(fn: Callable[..., Any], beta: float) -> int:
    """Bytes a call at batch 64 (float32) keeps alive for its backward pass: the tensors autograd saves,
    counted once per storage, plus the output. This is the loss's own memory cost in training."""
    inputs = [t.clone().requires_grad_(i < 2) for i, t in enumerate(_random_logps(64, _gen(91)))]
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs, beta)
    total = sum(seen.values())
    if isinstance(out, torch.Tensor):
        total += out.numel() * out.element_size()
    return int(total)


def _record_properties(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> None:
    for key, probe in (("batch_coupled", _batch_coupled), ("seconds_per_call", _seconds_per_call),
                       ("autograd_bytes_per_call", _autograd_bytes_per_call)):
        try:
            props[key] = probe(fn, beta)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - properties never fail a candidate
            if _is_oom(exc):
                raise MemoryError(str(exc)) from exc
            props[key] = None
