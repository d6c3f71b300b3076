"""Helpers both offline proposers share: reading the tree genomes a context shows, names and
descriptions of trees, and the per-step random generator.

What this module guarantees
---------------------------
* Nothing here holds state that matters across calls: ``_parse`` is a pure memo, and ``_rng`` derives
  the generator from (kind, seed, context.seed, context.step) only, so proposals stay pure functions of
  the proposer's arguments and the ``ProposalContext``.
* ``context_keys`` ignores malformed genomes (a genome that is not a tree is never bred from).
"""

from __future__ import annotations

import functools
import json
import random

from lossforge.proposers.gp.expressions import Tree, canonical_key, is_tree, op_names, simplify, to_infix
from lossforge.proposers.base import ArchiveView, ProposalContext

__all__ = ["context_keys", "slug"]

_BORING_OPS = frozenset({"neg", "scale", "const", "add", "sub", "rho", "c", "r"})


# --------------------------------------------------------------------------------------------------
# Helpers shared by both proposers
# --------------------------------------------------------------------------------------------------


def _views(context: ProposalContext) -> list[ArchiveView]:
    out = list(context.best) + list(context.recent) + list(context.failures)
    if context.repair_of is not None:
        out.append(context.repair_of)
    return out


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> tuple[str, str] | None:
    """JSON of a genome -> (JSON of its simplified tree, canonical key), or None if not a tree.

    A pure memo (same answer with or without it), so it holds no state that matters across calls.
    """
    tree = json.loads(text)
    if not is_tree(tree):
        return None
    simple = simplify(tree)
    return json.dumps(simple), canonical_key(simple)


def _genome(genome: object) -> tuple[Tree, str] | None:
    """(simplified tree, canonical key) of an archived genome, or None if it is not a tree."""
    if genome is None:
        return None
    try:
        text = json.dumps(genome, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    parsed = _parse(text)
    return None if parsed is None else (json.loads(parsed[0]), parsed[1])


def context_keys(context: ProposalContext) -> set[str]:
    """Canonical keys of every tree genome the context shows (malformed genomes are ignored)."""
    keys: set[str] = set()
    for view in _views(context):
        parsed = _genome(view.genome)
        if parsed is not None:
            keys.add(parsed[1])
    return keys


def slug(tree: Tree, step: int, prefix: str = "") -> str:
    """A short readable name: the first distinctive ops of the tree and the step, e.g. mix_softplus_exp_17."""
    ops: list[str] = []
    for op in op_names(tree):
        if op not in _BORING_OPS and op not in ops:
            ops.append(op)
    if not ops:
        root = tree if isinstance(tree, str) else tree[0]
        ops = ["linear" if root in _BORING_OPS else root]
    return "_".join(([prefix] if prefix else []) + ops[:3] + [str(step)])


def _short(tree: Tree, limit: int = 60) -> str:
    text = to_infix(tree)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rng(kind: str, seed: int, context: ProposalContext) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return random.Random(f"{kind}:{seed}:{context.seed}:{context.step}")
