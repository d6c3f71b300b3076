"""The LLM proposer's prompts: the task, a bounded selection of the archive, repair and reflection.

``proposal_messages(context, limits)`` builds the chat messages for one proposal (or, when
``context.repair_of`` is set, one repair); ``reflection_messages(summary)`` those for the short note
written after each scored candidate; ``describe_outcome(...)`` the summary that note is about.

What it guarantees
------------------
* Bounded: the user message is at most ``limits.max_chars`` characters (about four characters a token)
  whatever the archive holds. It shows, in this order of priority, the candidate to repair, the user's
  hints, the best candidates, the most recent failures (with their check summaries and reflections) and
  a few diverse ones; each code listing is cut to ``limits.max_code_chars``, and sections that no longer
  fit are dropped whole (a note says how many). Never the whole history.
* Deterministic: the same context and limits give the same messages (no clock, no randomness), so a
  re-run proposal step sends the same prompt.
* Excluded candidates (``context.excluded_ids``) are never shown; pinned ones are always in the best
  section, marked as pinned.
* The texts are written for this project (see ``PROMPT_VERSION``); they tell the model the candidate
  interface, beta, what the checks test and what fitness means.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from lossforge.proposers.base import ArchiveView, ProposalContext
from lossforge.settings.llm import PromptLimits

__all__ = [
    "PROMPT_VERSION",
    "PROPOSAL_SCHEMA",
    "describe_outcome",
    "proposal_messages",
    "proposal_response_format",
    "reflection_messages",
    "select_views",
    "truncation_note",
]

PROMPT_VERSION = "lossforge-propose-3"  # 2: reasoning is not read as the proposal; 3: frontier fitness with its noise floor

PROPOSAL_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "description": "Your reasoning: the idea and why it should score well."},
        "name": {"type": "string", "description": "A short snake_case name for the loss."},
        "code": {"type": "string", "description": "The complete Python source of the candidate."},
    },
    "required": ["thought", "name", "code"],
    "additionalProperties": False,
}


def proposal_response_format() -> dict:
    """The ``response_format`` asking for a JSON object with thought, name and code."""
    return {"type": "json_schema", "json_schema": {"name": "loss_proposal", "schema": PROPOSAL_SCHEMA, "strict": True}}


SYSTEM_PROMPT = """\
You are a machine-learning researcher searching for new preference-optimization objectives, the part \
in which methods such as DPO, IPO, SLiC and KTO differ. Each of your proposals is a loss function written \
in Python. It is unit-checked in a sandbox, then used to fine-tune a small language model, and the trained \
model is scored. You see the best earlier candidates, recent failures and notes written after each \
result; use them. Prefer ideas that are simple, numerically safe and clearly different from what has \
already been tried. Answer with a single JSON object and nothing else."""


def task_description(beta: float, fitness_betas: list[float] | None = None, aggregate: str = "min") -> str:
    """The task, the candidate interface, the checks and the meaning of fitness (over `fitness_betas`
    combined by `aggregate` when the search reads it at several betas)."""
    return _TASK.format(beta=beta) + _several_betas(beta, fitness_betas or [], aggregate)


def _several_betas(beta: float, betas: list[float], aggregate: str) -> str:
    others = sorted({b for b in betas if b != beta})
    if not others:
        return ""
    listed = ", ".join(f"{b:g}" for b in [beta, *others])
    how = "the worst (lowest) of" if aggregate == "min" else "the mean of"
    return (
        f"\n3. In this search the fitness is {how} the readings at beta {listed}: the same loss is trained once per "
        "beta, so it must work across betas, not only at the one it was tuned for (a fixed target on "
        "`beta * margin` moves the policy very differently at each beta)."
    )


_TASK = """\
## The task
Write one loss for preference pairs. A candidate is Python source with exactly one top-level function:

```python
import torch
import torch.nn.functional as F

def my_loss(policy_chosen_logps, policy_rejected_logps,
            reference_chosen_logps, reference_rejected_logps, beta):
    ...
    return losses  # a float tensor of shape (batch,): one loss per pair, lower is better for the policy
```

The four inputs are tensors of shape (batch,): the summed log-probabilities of the preferred ("chosen") \
and dispreferred ("rejected") answers under the policy being trained and under the frozen reference \
model. `beta` is a Python float, {beta:g} in this search. The usual building block is the margin \
`(policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)`; \
DPO's loss is `-F.logsigmoid(beta * margin)`.

Rules: only `import math`, `import torch` and `import torch.nn.functional as F` at the top; the body uses \
tensor operations, no other imports, no globals, no file or network access, no `while`, loops only over \
small literal ranges; put any constants inside the function body.

## How a candidate is judged
1. Checks (milliseconds): the allowed syntax, output shape (batch,), finite values and gradients even for \
extreme margins (about +-20 logits), a lower loss when the chosen answer becomes more likely relative to \
the rejected one, float dtypes and determinism. A failed check comes back to you with its evidence.
2. Fitness (seconds): the loss fine-tunes a small reference language model on a synthetic preference task \
whose pairs are labelled by a hidden reward (Bradley-Terry, with label noise). Fitness is the reward gain \
of the loss's reward-KL frontier at a fixed KL budget from the reference: along training the policy traces \
a path of (KL, reward gain), a curve is fitted to it and read at the budget (or at the furthest KL the \
loss reached, if less), in standard deviations of the reference's reward. How fast a loss walks along its \
frontier does not matter, only how much reward it buys per nat of KL. Higher is better. About 0 means the \
policy barely moved, below 0 that it moved the wrong way; a loss that spends its KL on noise scores low, \
and one that becomes non-finite during training is degenerate and gets no fitness. Every fitness comes \
with its standard error (+-): a difference smaller than about twice the combined errors is noise, not a win."""


FORMAT_INSTRUCTIONS = """\
## Your answer
Reply with one JSON object with three string fields:
- "thought": your reasoning in a few sentences (what you change and why it should help),
- "name": a short snake_case name for the loss,
- "code": the complete candidate source (imports and the one function).
If you reason before answering (for instance in a <think> block), the reasoning is kept as a note but \
never read as the proposal: only the JSON object after it counts, so it must be complete."""


def truncation_note(max_tokens: int | None) -> str:
    """Appended to the prompt when an answer to it was cut off at the token limit and it is asked again."""
    limit = f"the limit of {max_tokens} tokens" if max_tokens is not None else "the server's token limit"
    return (
        f"\n\n(Your previous answer to this prompt was cut off at {limit} before it was complete. Answer "
        "again, completely: keep any reasoning short and make sure the final answer is whole.)"
    )


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return isinstance(value, (int, float)) and value == value and value not in (float("inf"), float("-inf"))


def _tokens(code: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*|\d+(?:\.\d+)?", code))


def _distance(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return 1.0 - (len(a & b) / len(union) if union else 1.0)


def select_views(
    context: ProposalContext, limits: PromptLimits
) -> tuple[list[tuple[ArchiveView, bool]], list[ArchiveView], list[ArchiveView]]:
    """(best with a pinned flag, diverse, failures) to show, excluded ids removed, no id twice."""
    excluded = set(context.excluded_ids)
    pinned = set(context.pinned_ids)
    repair_id = context.repair_of.id if context.repair_of is not None else None
    pool: dict[int, ArchiveView] = {}
    for v in list(context.best) + list(context.recent):
        if v.id not in excluded and v.id not in pool:
            pool[v.id] = v
    scored = sorted((v for v in pool.values() if _finite(v.fitness)), key=lambda v: (-float(v.fitness), v.id))
    best = [(v, v.id in pinned) for v in scored[: limits.n_best]]
    shown = {v.id for v, _ in best}
    every = list(context.best) + list(context.recent) + list(context.failures)
    for v in every:
        if v.id in pinned and v.id not in shown and v.id not in excluded:
            best.append((v, True))
            shown.add(v.id)
    # diverse: greedily the scored candidate farthest (by code tokens) from everything shown so far
    chosen_tokens = [_tokens(v.code) for v, _ in best]
    rest = [v for v in scored if v.id not in shown]
    diverse: list[ArchiveView] = []
    while rest and len(diverse) < limits.n_diverse:
        def spread(v: ArchiveView) -> float:
            toks = _tokens(v.code)
            return min((_distance(toks, t) for t in chosen_tokens), default=1.0)

        pick = max(rest, key=lambda v: (round(spread(v), 6), float(v.fitness), -v.id))
        diverse.append(pick)
        chosen_tokens.append(_tokens(pick.code))
        shown.add(pick.id)
        rest = [v for v in rest if v.id != pick.id]
    failures = [
        v for v in context.failures if v.id not in excluded and v.id not in shown and v.id != repair_id
    ][: limits.n_failures]
    return best, diverse, failures


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: max(0, limit - 28)].rstrip() + "\n# ... (cut for length)"


def _one_line(text: str | None, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fitness(v: ArchiveView) -> str:
    if not _finite(v.fitness):
        return v.status
    return f"fitness {float(v.fitness):.4f}" + (f" +- {v.fitness_stderr:.4f}" if _finite(v.fitness_stderr) else "")


def render_view(v: ArchiveView, limits: PromptLimits, *, label: str = "", show_code: bool = True) -> str:
    """One candidate as a Markdown block: heading, outcome, reflection, code."""
    lines = [f"### #{v.id} {v.name}: {_fitness(v)}{f' ({label})' if label else ''}"]
    if v.check_summary and not _finite(v.fitness):
        lines.append(f"Outcome: {_one_line(v.check_summary, 600)}")
    if v.reflection:
        lines.append(f"Note: {_one_line(v.reflection)}")
    if show_code and v.code.strip():
        lines += ["```python", _cut(v.code, limits.max_code_chars), "```"]
    return "\n".join(lines)


def _repair_section(v: ArchiveView, limits: PromptLimits) -> str:
    why = v.check_summary or v.status
    parts = [
        "## Repair this candidate",
        f"Candidate #{v.id} `{v.name}` did not pass: {_one_line(why, 1500)}",
    ]
    if v.reflection:
        parts.append(f"Note: {_one_line(v.reflection)}")
    parts += [
        "```python",
        _cut(v.code, max(limits.max_code_chars, 3000)),
        "```",
        "First diagnose the failure in \"thought\": which line causes it and why, given the evidence above. "
        "Then return the repaired candidate in \"code\": keep its idea and change only what the failure "
        "requires. Keep the name unless the repair changes the idea.",
    ]
    return "\n".join(parts)


def proposal_messages(context: ProposalContext, limits: PromptLimits | None = None) -> list[dict[str, str]]:
    """System and user messages for one proposal (a repair when ``context.repair_of`` is set)."""
    limits = limits or PromptLimits()
    best, diverse, failures = select_views(context, limits)
    head = task_description(context.beta, context.fitness_betas, context.fitness_aggregate)
    if context.repair_of is not None:
        tail = FORMAT_INSTRUCTIONS + "\nReply with the JSON object only."
    else:
        tail = (
            FORMAT_INSTRUCTIONS
            + f"\n\nThis is proposal {context.step}. Propose one new loss that differs from those shown and "
            "should reach a higher fitness. Reply with the JSON object only."
        )
    room = limits.max_chars - len(head) - len(tail) - 8
    sections: list[str] = []
    dropped = 0

    def add(text: str) -> bool:
        nonlocal room
        if len(text) + 2 <= room:
            sections.append(text)
            room -= len(text) + 2
            return True
        return False

    if context.repair_of is not None:
        text = _repair_section(context.repair_of, limits)
        if not add(text):  # the repair target always goes in, cut to what is left
            add(text[: max(0, room - 2)])
    if context.hints:
        hints = "## Hints from the user (follow them)\n" + "\n".join(f"- {_one_line(h, 500)}" for h in context.hints[-5:])
        dropped += not add(hints)
    groups = [
        ("## Best candidates so far", [render_view(v, limits, label="pinned by the user" if p else "") for v, p in best]),
        ("## Recent failures (learn from them)", [render_view(v, limits) for v in failures]),
        ("## Other directions tried", [render_view(v, limits) for v in diverse]),
    ]
    if not best and context.repair_of is None:
        sections_note = "## Archive\nNothing has been scored yet: start from a sound, simple idea."
        add(sections_note)
    for title, blocks in groups:
        if not blocks:
            continue
        if not add(f"{title}\n\n{blocks[0]}"):
            dropped += len(blocks)
            continue
        for block in blocks[1:]:
            dropped += not add(block)
    if dropped:
        add(f"({dropped} more candidates not shown, to keep this prompt short.)")
    user = "\n\n".join([head, *sections, tail])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# Reflection
# --------------------------------------------------------------------------------------------------

REFLECTION_SYSTEM = """\
You review one result of a search for preference-optimization losses. In at most three sentences of \
plain text (no code, no lists), say what this outcome tells us about the idea behind the loss and what \
the next proposals should try or avoid."""


def describe_outcome(
    view: ArchiveView,
    *,
    best_before: float | None = None,
    result: dict | None = None,
    max_code_chars: int = 1_500,
    best_before_stderr: float | None = None,
) -> str:
    """A compact description of one candidate's outcome (what ``reflect`` is asked about).

    A difference from the best within the noise floor (`lossforge.trainer.proxy.fitness.compare`)
    is described as level, never as a new best.
    """
    from lossforge.trainer.proxy.fitness import compare

    lines = [f"Candidate #{view.id} `{view.name}`, status: {view.status}."]
    if _finite(view.fitness):
        fitness = float(view.fitness)
        shown = f"{fitness:.4f}" + (f" +- {view.fitness_stderr:.4f}" if _finite(view.fitness_stderr) else "")
        if best_before is None:
            lines.append(f"Fitness {shown}; it is the first scored candidate.")
        else:
            delta = fitness - best_before
            standing, floor = compare(fitness, view.fitness_stderr, best_before, best_before_stderr)
            relation = {
                "win": "a new best",
                "level": "level with the best (the difference is within the noise floor)",
                "below": "below the best",
            }[standing]
            lines.append(
                f"Fitness {shown}, {relation} (best before {best_before:.4f}, difference {delta:+.4f}, noise floor {floor:.4f})."
            )
    elif view.check_summary:
        lines.append(f"Outcome: {_one_line(view.check_summary, 800)}")
    result = result or {}
    kl = result.get("final_kl")
    if isinstance(kl, (int, float)):
        lines.append(f"Final KL to the reference: {kl:.3f} nats.")
    readings = readings_line(result)
    if readings:
        lines.append(readings)
    path = result.get("path")
    if isinstance(path, list) and path:
        points = [
            f"step {p.get('step')}: KL {p.get('kl', 0):.3f}, gain {p.get('reward_gain', 0):+.3f}"
            for p in path[-4:]
            if isinstance(p, dict)
        ]
        if points:
            lines.append("Training path (last checkpoints): " + "; ".join(points) + ".")
    if view.code.strip():
        lines += ["Code:", "```python", _cut(view.code, max_code_chars), "```"]
    return "\n".join(lines)


def readings_line(result: dict | None) -> str | None:
    """One sentence on the fitness readings per setting ([proxy.fitness] variants), or None without them."""
    result = result or {}
    readings = result.get("readings")
    skipped = result.get("complete") is False
    if not isinstance(readings, list) or (len(readings) < 2 and not skipped):
        return None
    parts = []
    for reading in readings:
        value = reading.get("fitness")
        shown = f"{value:.3f}" if _finite(value) else f"{reading.get('status')} ({_one_line(str(reading.get('error')), 120)}, counted as 0)"
        parts.append(f"beta {reading.get('beta')}: {shown}")
    sentence = f"Fitness is the {result.get('aggregate', 'min')} over settings; readings: " + "; ".join(parts) + "."
    if skipped:
        sentence += " The other settings were skipped: this first reading is already below the top candidates."
    return sentence


def reflection_messages(candidate_summary: str) -> list[dict[str, str]]:
    """System and user messages asking for a short reflection on ``candidate_summary``."""
    return [
        {"role": "system", "content": REFLECTION_SYSTEM},
        {"role": "user", "content": candidate_summary.strip() + "\n\nYour reflection (at most three sentences):"},
    ]
