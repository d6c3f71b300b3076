"""The random-search baseline: random trees from the grammar of the expression language.

What this module guarantees
---------------------------
* The same determinism, novelty and shape guarantees as ``EvolutionaryProposer``
  (``lossforge.proposers.gp.evolution``): a proposal is a pure function of the constructor arguments and
  the ``ProposalContext``, its genome's ``canonical_key`` is new to the context, and it is a simplified
  tree within ``max_depth`` and ``max_size`` that mentions a terminal, rendered as ``code``.
* No sign bias; the validity screen (``expressions.check_tree``) only with ``valid_only=True``.
"""

from __future__ import annotations

from lossforge.proposers.gp.common import _rng, _short, context_keys, slug
from lossforge.proposers.gp.expressions import (
    Tree,
    canonical_key,
    check_tree,
    depth,
    has_vars,
    random_tree,
    render,
    simplify,
    size,
)
from lossforge.proposers.base import Proposal, ProposalContext

__all__ = ["RandomSearchProposer"]


class RandomSearchProposer:
    """Random trees from the grammar (no sign bias), same limits and determinism as the evolutionary one.

    ``valid_only=True`` resamples until ``check_tree`` passes (a stronger baseline that isolates the
    value of selection and variation from that of the validity screen).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        max_depth: int = 6,
        max_size: int = 30,
        min_depth: int = 2,
        valid_only: bool = False,
        max_attempts: int = 500,
    ) -> None:
        if not 1 <= min_depth <= max_depth:
            raise ValueError("need 1 <= min_depth <= max_depth")
        self.seed = seed
        self.max_depth = max_depth
        self.max_size = max_size
        self.min_depth = min_depth
        self.valid_only = valid_only
        self.max_attempts = max_attempts

    def propose(self, context: ProposalContext) -> Proposal:
        """A random tree not in the context (pure function of the constructor arguments and context)."""
        rng = _rng("random", self.seed, context)
        seen = context_keys(context)
        first: Tree | None = None
        attempts = 0
        while True:
            attempts += 1
            tree = simplify(random_tree(rng, rng.randint(self.min_depth, self.max_depth), 0))
            if not (has_vars(tree) and depth(tree) <= self.max_depth and size(tree) <= self.max_size):
                continue
            if canonical_key(tree) in seen:
                continue
            if first is None:
                first = tree
            if not self.valid_only or check_tree(tree) is None:
                break
            if attempts >= self.max_attempts:
                tree = first
                break
        name = slug(tree, context.step, prefix="rand")
        return Proposal(
            thought=f"Random expression from the grammar: {_short(tree, 120)}.",
            name=name,
            code=render(tree, name),
            genome=tree,
            operator="random",
        )
