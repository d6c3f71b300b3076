"""The unit-check suite every candidate loss passes before training.

``run_checks(code, beta)`` runs in the calling process (a sandbox backend calls it inside an isolated
child) and returns a ``CheckReport``.

What this module guarantees
---------------------------
* The checks run in this order and stop at the first failure (later checks are not run, so the report
  names exactly one failed check, with evidence and an LLM-actionable hint):

  1. ``policy``: ``load_candidate`` (AST allow-list + RestrictedPython compile); evidence is the
     violation, prefixed with the policy rule (``[forbidden_attribute] line 4: ...``).
  2. ``shape``: a floating tensor of shape ``(batch,)`` for batch sizes 1, 3 and 64.
  3. ``finite``: finite values for random float32 log-probs ~ U(low, -1), low = -80 (or higher when
     ``beta`` is large, so that ``|beta * margin|`` stays within ``TRAINING_MARGIN_LIMIT``).
  4. ``extreme_margins``: finite values and finite gradients when ``beta * margin`` is
     +-``TRAINING_MARGIN_LIMIT`` (50) and 0 (a batch of identical zero margins: the state at the first
     training step) and when all log-probs are about -1e4. Beyond the range training reaches
     (``beta * margin`` = +-1e2, +-1e3, ``BEYOND_TRAINING_MARGINS``) non-finite values or gradients are
     *warnings*, not failures: they go to ``properties["beyond_training_range"]`` and the evidence,
     with how training stays finite (see ``TRAINING_MARGIN_LIMIT``). So the published losses with an
     ``exp(-beta * margin)`` term (DiscoPOP/LRML, CELL, DBAQL, TRL's ``loss_type="discopop"``) pass as
     published.
  5. ``gradient``: a nonzero, finite gradient reaches ``policy_chosen_logps`` and
     ``policy_rejected_logps``.
  6. ``prefers_chosen``: the mean loss at margin +m is below the mean loss of the mirrored pairs (chosen
     and rejected swapped, margin -m) for m = 1, 3, 5 logits.
  7. ``dtype``: float64 and bfloat16 inputs give a finite ``(batch,)`` output without error (bfloat16
     precision is reported, not judged).
  8. ``determinism``: the same inputs twice give the same output, and the inputs are not modified.

  All inputs come from a fixed-seed generator: the suite is deterministic.
* Properties (never failures) in ``report.properties``: ``batch_coupled`` (does a pair's loss change
  when the other pairs change), ``seconds_per_call`` (median forward time at batch 64, float32),
  ``autograd_bytes_per_call`` (memory a call at batch 64 keeps for its backward pass: saved tensors and
  output),
  ``finite_at_batch_1``, ``loss_at_zero_margin``, ``dtypes`` (output dtype per input dtype),
  ``bfloat16_max_abs_error``, ``warnings`` (warnings the loss itself raised while it ran, with the
  candidate line where known; warnings of the check harness are not the loss's and are not reported),
  ``beyond_training_range`` (see check 4), ``policy_rule`` (on a policy failure). A passing report carries ``fingerprint`` (``lossforge.candidate.fingerprint``) and
  ``function_name``.
* ``run_checks`` never raises for a bad candidate, except ``MemoryError`` (also raised for torch's
  "can't allocate memory"), which the process backend reports as a crash. An exception inside a check is
  that check's failure, with the candidate line that raised it.

What it does not guarantee
--------------------------
* No isolation and no time limit: it runs the candidate in this process. Use a sandbox backend
  (``lossforge.sandbox.process.ProcessSandbox``) for untrusted code.
* It runs torch on one thread while it works (``fingerprint.single_threaded``: tiny tensors, and
  multi-threaded OpenMP on a busy machine is 1000x slower); torch's thread count is process-wide, so a
  caller training on other threads of the same process sees that briefly.
* Passing says the loss is well-formed and numerically sane, not that it trains well.
"""
from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Callable

import torch

from lossforge.candidate.check_inputs import (
    RANDOM_LOW,
    _backward,
    _call,
    _describe_exception,
    _example,
    _Fail,
    _fmt,
    _gen,
    _is_oom,
    _leafs,
    _margin_inputs,
    _mirror,
    _nonfinite_summary,
    _random_logps,
)
from lossforge.candidate.fingerprint import fingerprint, single_threaded
from lossforge.candidate.namespace import load_candidate
from lossforge.candidate.policy import CANDIDATE_FILENAME, PolicyViolation
from lossforge.candidate.properties import _record_properties
from lossforge.candidate.report import CheckReport, CheckResult

__all__ = ["CHECK_NAMES", "TRAINING_MARGIN_LIMIT", "run_checks", "check_function"]

#: The checks, in the order they run.
CHECK_NAMES = (
    "policy", "shape", "finite", "extreme_margins", "gradient", "prefers_chosen", "dtype", "determinism",
)

SHAPE_BATCHES = (1, 3, 64)

#: The largest ``|beta * margin|`` (in logits; margin = (pc - rc) - (pr - rr), summed log-probs) at which a
#: loss must give finite values and gradients. Where the bound comes from:
#:
#: * ``beta * margin`` is the implicit reward margin that TRL logs as ``rewards/margins``. At the first
#:   training step it is 0 for every pair (policy = reference), and losses move it from there.
#: * Positive side: logistic-type losses stop pushing once it is past about 20 (DPO's gradient there is
#:   e^-20 = 2e-9), so training does not drive pairs far beyond that.
#: * Negative side: -50 means the policy prefers the rejected completion by 50 / beta nats more than the
#:   reference does: 500 nats at TRL's default beta 0.1, 1000 at the DiscoPOP paper's 0.05 (Lu et al.
#:   2024, arXiv:2406.08414), 100 at beta 0.5. Summed log-prob margins of real completions (a few hundred
#:   tokens, a few nats per token at most) stay within a few hundred nats, and wrong-way pairs are the
#:   ones every preference loss pushes back hardest.
#: * 50 is also where float32 is still comfortable for the published ``exp(-beta * margin)`` terms
#:   (e^50 = 5e21; float32 and bfloat16 overflow at e^88.7), so the gate judges the formulas where they
#:   are used and not where float32 gives out.
#:
#: Beyond the bound (``BEYOND_TRAINING_MARGINS``) a non-finite value is reported as a warning. Training
#: stays finite there anyway: the proxy screen (``trainer/proxy/screen.py``) and the TRL job
#: (``trainer/trl_job.py``) check every step's loss (and the screen its gradient norm) before the
#: optimiser step and stop with the candidate marked degenerate at the first non-finite one, so a model
#: is never updated with inf/NaN; finite but huge gradients are clipped to norm 1.0.
TRAINING_MARGIN_LIMIT = 50.0
#: Margins (beta * margin, logits) in the range training reaches: non-finite here is a failure.
EXTREME_MARGINS = (TRAINING_MARGIN_LIMIT, -TRAINING_MARGIN_LIMIT, 0.0)
#: Stress margins beyond that range: non-finite here is a warning (``beyond_training_range``).
BEYOND_TRAINING_MARGINS = (1e2, -1e2, 1e3, -1e3)
PREFERENCE_MARGINS = (1.0, 3.0, 5.0)


def _random_low(beta: float) -> float:
    """The lowest random log-prob for ``beta``: -80, raised at large ``beta`` so that every random pair's
    ``|beta * margin|`` (at most ``2 * (high - low) * beta``) stays within ``TRAINING_MARGIN_LIMIT``."""
    return max(RANDOM_LOW, -1.0 - TRAINING_MARGIN_LIMIT / (2.0 * beta))


# --------------------------------------------------------------------------------------------------
# The checks: each returns its success evidence or raises _Fail
# --------------------------------------------------------------------------------------------------


def _check_shape(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    shapes = []
    for i, batch in enumerate(SHAPE_BATCHES):
        inputs = _random_logps(batch, _gen(10 + i), low=_random_low(beta))
        with torch.no_grad():
            out = _call(fn, inputs, beta, f"batch size {batch}")
        if isinstance(out, tuple):
            raise _Fail(f"batch size {batch}: returned a tuple of {len(out)} items; expected one tensor of shape "
                        f"({batch},).", "return only the per-pair losses tensor (not rewards or a tuple).")
        if not isinstance(out, torch.Tensor):
            raise _Fail(f"batch size {batch}: returned {type(out).__name__} {str(out)[:60]}; expected a tensor of "
                        f"shape ({batch},).", "return a torch tensor with one loss per pair, shape (batch,).")
        if tuple(out.shape) != (batch,):
            got = tuple(out.shape)
            what = "a scalar" if got == () else f"shape {got}"
            raise _Fail(f"batch size {batch}: returned {what}; expected shape ({batch},).",
                        "return one loss per preference pair, shape (batch,); do not reduce with .mean()/.sum() "
                        "over the batch and do not add dimensions.")
        if not out.dtype.is_floating_point:
            raise _Fail(f"batch size {batch}: returned a {out.dtype} tensor; losses must be floating point.",
                        "compute the loss with float tensor math (no comparisons or integer casts as output).")
        if batch == 1:
            props["finite_at_batch_1"] = bool(torch.isfinite(out).all())
        shapes.append(f"({batch},)")
    return "shapes " + ", ".join(shapes) + " for batch sizes " + ", ".join(map(str, SHAPE_BATCHES)) + "."


def _check_finite(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    low = _random_low(beta)
    where = f"random float32 log-probs in [{low:g}, -1]"
    inputs = _random_logps(64, _gen(20), low=low)
    with torch.no_grad():
        out = _call(fn, inputs, beta, where)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise _Fail(f"{where}: the loss is {_nonfinite_summary(out)} "
                    f"(e.g. pair with {_example(inputs, idx)} gives {float(out[idx])}).",
                    "make the math stable: use F.logsigmoid/F.softplus instead of log(sigmoid(.)), clamp "
                    "arguments of exp/log/division, avoid 0 * inf.")
    zero = _margin_inputs(0.0, beta, 8, _gen(21))
    with torch.no_grad():
        props["loss_at_zero_margin"] = float(_call(fn, zero, beta, "zero margins").float().mean())
    return f"64 random pairs give finite losses in [{_fmt(float(out.min()))}, {_fmt(float(out.max()))}]."


def _extreme_cases(beta: float, margins: tuple[float, ...], offset: int) -> list[tuple[str, list[torch.Tensor]]]:
    cases: list[tuple[str, list[torch.Tensor]]] = []
    for i, m in enumerate(margins):
        inputs = _margin_inputs(m, beta, 4, _gen(offset + i))
        if m == 0.0:
            desc = "margin beta*((pc-rc)-(pr-rr)) = 0 for every pair (as at the first training step)"
        else:
            desc = f"margin beta*((pc-rc)-(pr-rr)) = {m:+g}"
        cases.append((desc, inputs))
    return cases


def _nonfinite_at(fn: Callable[..., Any], beta: float, desc: str, inputs: list[torch.Tensor]) -> tuple[str, str] | None:
    """None when the loss and its gradients are finite on ``inputs``; else (evidence, hint)."""
    leafs = _leafs(inputs)
    out = _call(fn, leafs, beta, desc)
    if not isinstance(out, torch.Tensor):  # pragma: no cover - shape check ran first
        raise _Fail(f"{desc}: returned {type(out).__name__}.", "return a tensor.")
    bad = ~torch.isfinite(out.detach())
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        return (f"{desc}: the loss is {_nonfinite_summary(out)} (e.g. {_example(leafs, idx)} gives "
                f"{float(out.detach()[idx])}).",
                "large margins overflow: clamp the argument of exp (e.g. torch.exp(x.clamp(max=50))), use "
                "F.logsigmoid/F.softplus, and avoid inf * 0 when gating one branch with a sigmoid.")
    if out.requires_grad:
        _backward(out, desc)
        for name, t in (("policy_chosen_logps", leafs[0]), ("policy_rejected_logps", leafs[1])):
            if t.grad is not None and not bool(torch.isfinite(t.grad).all()):
                return (f"{desc}: the values are finite but the gradient w.r.t. {name} is "
                        f"{_nonfinite_summary(t.grad)}.",
                        "a branch that is inf/nan still poisons the gradient, even if torch.where or a 0 "
                        "weight hides its value: clamp inside every branch (e.g. exp(x.clamp(max=50))); "
                        "avoid sqrt/log/division at 0.")
    return None


def _check_extreme(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    limit = f"|beta*margin| <= {TRAINING_MARGIN_LIMIT:g}"
    cases = _extreme_cases(beta, EXTREME_MARGINS, 30)
    deep = [-1e4 + t for t in _random_logps(4, _gen(39), low=-50.0, high=0.0)]
    cases.append(("all log-probs about -1e4", deep))
    for desc, inputs in cases:
        failure = _nonfinite_at(fn, beta, desc, inputs)
        if failure is not None:
            evidence, hint = failure
            raise _Fail(f"{evidence} This is within the range training reaches ({limit}).", hint)
    evidence = (f"finite values and gradients at margins {', '.join(f'{m:+g}' for m in EXTREME_MARGINS)} (logits; "
                f"the range training reaches is {limit}) and at log-probs about -1e4.")
    beyond = []
    for desc, inputs in _extreme_cases(beta, BEYOND_TRAINING_MARGINS, 35):
        failure = _nonfinite_at(fn, beta, desc, inputs)
        if failure is not None:
            beyond.append(failure[0])
    if beyond:
        props["beyond_training_range"] = beyond
        evidence += (f" Warning, beyond that range: {beyond[0]}" + (f" (and {len(beyond) - 1} more)" if len(beyond) > 1 else "")
                     + " Training stays finite: the proxy screen and the TRL job stop at the first non-finite loss or "
                     "gradient, before the optimiser step, and mark the candidate degenerate.")
    return evidence


def _check_gradient(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    leafs = _leafs(_random_logps(64, _gen(40), low=_random_low(beta)))
    out = _call(fn, leafs, beta, "random log-probs")
    if not out.requires_grad:
        raise _Fail("the loss does not depend on policy_chosen_logps or policy_rejected_logps through autograd "
                    "(the returned tensor has no gradient).",
                    "build the loss from the policy log-probs with differentiable torch ops; do not use .detach(), "
                    ".item(), torch.tensor(...) of values, or a constant like torch.zeros_like(...).")
    _backward(out, "random log-probs")
    norms = []
    for name, t in (("policy_chosen_logps", leafs[0]), ("policy_rejected_logps", leafs[1])):
        if t.grad is None:
            raise _Fail(f"no gradient reaches {name}.",
                        f"the loss must depend on {name} (through the margin); check it is not detached or unused.")
        if not bool(torch.isfinite(t.grad).all()):
            raise _Fail(f"the gradient w.r.t. {name} is {_nonfinite_summary(t.grad)} for random inputs.",
                        "avoid sqrt/log/division at 0 and non-differentiable points; clamp arguments.")
        if not bool((t.grad != 0).any()):
            raise _Fail(f"the gradient w.r.t. {name} is exactly zero for all 64 random pairs.",
                        f"the loss must change when {name} changes; avoid detach, rounding, sign(), comparisons "
                        "or clamps that flatten the loss everywhere.")
        norms.append(f"|d/d {name}| = {_fmt(float(t.grad.norm()))}")
    return "; ".join(norms) + "."


def _check_prefers_chosen(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    rows = []
    failed = []
    for i, m in enumerate(PREFERENCE_MARGINS):
        inputs = _margin_inputs(m, beta, 64, _gen(50 + i))
        with torch.no_grad():
            good = float(_call(fn, inputs, beta, f"margin +{m:g}").double().mean())
            bad = float(_call(fn, _mirror(inputs), beta, f"margin -{m:g}").double().mean())
        rows.append(f"margin +{m:g}: {_fmt(good)} vs -{m:g}: {_fmt(bad)}")
        if not good < bad:
            failed.append(m)
    evidence = "mean loss " + "; ".join(rows)
    if failed:
        raise _Fail(evidence + f". The loss is not lower when the policy prefers the chosen answer (margin "
                    f"+{failed[0]:g}) than when it prefers the rejected one (-{failed[0]:g}).",
                    "minimising the loss must increase the margin beta*((pc-rc)-(pr-rr)): check the sign, e.g. DPO is "
                    "-F.logsigmoid(beta * margin), not -F.logsigmoid(-beta * margin).")
    return evidence + "."


def _check_dtype(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    base = _random_logps(16, _gen(60), dtype=torch.float64, low=_random_low(beta))
    with torch.no_grad():
        ref = _call(fn, [t.float() for t in base], beta, "float32 inputs").double()
    dtypes: dict[str, str] = {}
    notes = []
    for dtype in (torch.float64, torch.bfloat16):
        inputs = [t.to(dtype) for t in base]
        name = str(dtype).replace("torch.", "")
        with torch.no_grad():
            out = _call(fn, inputs, beta, f"{name} inputs")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (16,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise _Fail(f"{name} inputs: returned {shape}; expected a tensor of shape (16,).",
                        "use dtype-agnostic tensor math; do not build constants with a fixed dtype.")
        if not bool(torch.isfinite(out).all()):
            raise _Fail(f"{name} inputs: the loss is {_nonfinite_summary(out)}.",
                        "keep intermediate values in range for low precision: prefer F.logsigmoid/F.softplus, "
                        "clamp exp arguments.")
        dtypes[name] = str(out.dtype).replace("torch.", "")
        if dtype == torch.bfloat16:
            err = float((out.double() - ref).abs().max())
            props["bfloat16_max_abs_error"] = err
            notes.append(f"bfloat16 -> {dtypes[name]} (max |error| vs float32 {_fmt(err)})")
        else:
            notes.append(f"float64 -> {dtypes[name]}")
    props["dtypes"] = dtypes
    return "; ".join(notes) + "."


def _check_determinism(fn: Callable[..., Any], beta: float, props: dict[str, Any]) -> str:
    inputs = _random_logps(32, _gen(70))
    copies = [t.clone() for t in inputs]
    with torch.no_grad():
        first = _call(fn, inputs, beta, "first call")
        second = _call(fn, inputs, beta, "second call")
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    for name, before, after in zip(names, copies, inputs):
        if not torch.equal(before, after):
            raise _Fail(f"the loss modified its input {name} in place.",
                        "never write into the inputs (x += ..., x[i] = ..., x.clamp_()); compute new tensors "
                        "(x = x + ..., x.clamp()).")
    if not torch.equal(first, second):
        diff = float((first.double() - second.double()).abs().max())
        raise _Fail(f"two calls on the same inputs differ (max |difference| {_fmt(diff)}).",
                    "the loss must be a deterministic function of its inputs: no torch.rand/randn/dropout/"
                    "bernoulli; no state kept between calls.")
    return "two calls on the same inputs give identical losses; inputs unchanged."


_CHECKS: tuple[tuple[str, Callable[[Callable[..., Any], float, dict[str, Any]], str]], ...] = (
    ("shape", _check_shape),
    ("finite", _check_finite),
    ("extreme_margins", _check_extreme),
    ("gradient", _check_gradient),
    ("prefers_chosen", _check_prefers_chosen),
    ("dtype", _check_dtype),
    ("determinism", _check_determinism),
)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _policy_failure(v: PolicyViolation, seconds: float) -> CheckResult:
    return CheckResult(name="policy", passed=False, evidence=f"[{v.check}] {v.evidence}", hint=v.hint,
                       seconds=seconds)


def _candidate_frame_line() -> int | None:
    """The line of the innermost candidate frame on the current stack (a warning raised inside torch or a
    RestrictedPython guard is attributed to the candidate line that called it)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == CANDIDATE_FILENAME:
            return frame.f_lineno
        frame = frame.f_back
    return None


def _watched(fn: Callable[..., Any], sink: list[tuple[str, str, int | None]]) -> Callable[..., Any]:
    """``fn`` that records the warnings raised while it runs into ``sink`` as (category, message, candidate
    line): the loss's own warnings, told apart from those of the harness around it (e.g. torch's
    "Converting a tensor with requires_grad=True to a scalar" when a check reads a value)."""

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        where = lineno if filename == CANDIDATE_FILENAME else _candidate_frame_line()
        sink.append((category.__name__, str(message), where))

    def call(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            return fn(*args)

    return call


def _warning_text(w: tuple[str, str, int | None]) -> str:
    category, message, line = w
    where = f" (line {line})" if line is not None else ""
    return f"{category}{where}: {message[:200]}"


def check_function(fn: Callable[..., Any], beta: float = 0.1, *, name: str | None = None,
                   with_fingerprint: bool = True) -> CheckReport:
    """Run the checks after ``policy`` on an already loaded function (e.g. a library loss).

    ``fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
    beta) -> losses`` takes four float tensors of shape ``(batch,)`` and a float; see the module
    docstring for the checks. Never raises for a bad loss except ``MemoryError``.
    """
    start = time.perf_counter()
    report = CheckReport(passed=False, function_name=name)
    props: dict[str, Any] = {}
    caught: list[str] = []
    seen: list[tuple[str, str, int | None]] = []
    fn = _watched(fn, seen)
    with warnings.catch_warnings(), torch.enable_grad(), single_threaded():
        warnings.simplefilter("ignore")  # the harness's own warnings; the loss's are recorded by _watched
        passed = True
        for check_name, check in _CHECKS:
            t0 = time.perf_counter()
            try:
                evidence = check(fn, beta, props)
                report.checks.append(CheckResult(name=check_name, passed=True, evidence=evidence,
                                                 seconds=time.perf_counter() - t0))
            except _Fail as f:
                report.checks.append(CheckResult(name=check_name, passed=False, evidence=f.evidence, hint=f.hint,
                                                 seconds=time.perf_counter() - t0))
                passed = False
            except PolicyViolation as v:  # the runtime guard refused something the static pass let through
                report.checks.append(_policy_failure(v, time.perf_counter() - t0))
                props["policy_rule"] = v.check
                passed = False
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. an odd return value tripping the check itself
                if _is_oom(exc):
                    raise MemoryError(str(exc)) from exc
                report.checks.append(CheckResult(
                    name=check_name, passed=False, seconds=time.perf_counter() - t0,
                    evidence=f"checking the result {_describe_exception(exc)}",
                    hint="return a float tensor of shape (batch,) computed with differentiable torch ops."))
                passed = False
            if not passed:
                break
            if check_name == "shape":
                try:
                    _record_properties(fn, beta, props)
                except PolicyViolation:
                    pass
        if passed and with_fingerprint:
            t0 = time.perf_counter()
            try:
                report.fingerprint = fingerprint(fn, beta)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001
                if _is_oom(exc):
                    raise MemoryError(str(exc)) from exc
                report.checks.append(CheckResult(
                    name="fingerprint", passed=False, seconds=time.perf_counter() - t0,
                    evidence=f"evaluating the loss on the fingerprint grid {_describe_exception(exc)}",
                    hint="the loss must work for any batch of valid log-probs (<= 0) and margins within +-20 logits."))
                passed = False
        caught = sorted({_warning_text(w) for w in seen})
    if caught:
        props["warnings"] = caught
    report.passed = passed
    report.properties = props
    report.seconds = time.perf_counter() - start
    return report


def run_checks(code: str, beta: float = 0.1) -> CheckReport:
    """Check candidate source ``code`` (policy, then the numeric checks); see the module docstring."""
    start = time.perf_counter()
    try:
        loaded = load_candidate(code)
    except PolicyViolation as v:
        return CheckReport(passed=False, checks=[_policy_failure(v, time.perf_counter() - start)],
                           properties={"policy_rule": v.check}, seconds=time.perf_counter() - start)
    policy = CheckResult(name="policy", passed=True, seconds=time.perf_counter() - start,
                         evidence=f"one function `{loaded.name}` with the candidate signature; only torch, F and math.")
    report = check_function(loaded.fn, beta, name=loaded.name)
    report.checks.insert(0, policy)
    report.seconds = time.perf_counter() - start
    return report
