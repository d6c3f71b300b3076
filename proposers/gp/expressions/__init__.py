"""The expression language of the offline (evolutionary / random-search) proposers.

A loss is an expression tree over three terminals, all already scaled by beta:

* ``rho`` = beta * ((pi_c - ref_c) - (pi_r - ref_r)), the DPO logit (margin),
* ``c``   = beta * (pi_c - ref_c), the chosen log-ratio,
* ``r``   = beta * (pi_r - ref_r), the rejected log-ratio,

and constants. Trees are plain JSON values (nested lists, strings and floats), so they are stored as a
candidate's ``genome`` in the archive and read back to breed from:

==================  ================================================================================
node                meaning
==================  ================================================================================
``"rho"``, ...      a terminal
``["const", v]``    the constant ``v``
``[u, x]``          a unary op ``u`` in ``UNARY_OPS``: neg, logsigmoid, softplus, sigmoid, tanh, relu,
                    square, abs, exp (emitted as ``exp(clamp(x, max=20))``), log1p_abs (log1p(|x|))
``[b, x, y]``       a binary op ``b`` in ``BINARY_OPS``: add, sub, mul, max, min
``["scale", k, x]`` the constant multiple ``k * x``
``["mix", a, b, x, tau]``  ``a * (1 - g) + b * g`` with the gate ``g = sigmoid(x / tau)``, ``tau > 0``
                    (this is how DiscoPOP/LRML blends its logistic and exponential parts)
==================  ================================================================================

What this module guarantees
---------------------------
* ``render(tree, name)`` returns deterministic, readable candidate source: the fixed import preamble
  and exactly one top-level function with the candidate signature, computing the terminals it uses once
  at the top, then the expression (long ones split into a few named intermediate lines), then
  ``return losses`` of shape ``(batch,)``. It uses only ``torch``, ``F`` and ``math``.
* ``evaluate(tree, rho, c, r)`` computes bit-for-bit what the rendered code computes when given the
  terminals from ``terminals(...)`` (same torch ops in the same order; subtrees without a terminal are
  folded to one Python float in both).
* ``simplify`` removes trivial structure (double negation, ``x*1``, ``x+0``, constant folding, ...)
  without changing the value on finite inputs beyond float rounding; ``canonical_key`` is equal for
  trees that are equal up to simplification, commutativity and associativity of add/mul/max/min.
* ``SEEDS``: the library losses expressible in the language, in a fixed order, already in simplified
  form (see their comments for the two that differ from the library by a factor beta^2: ``ipo_like``,
  ``sppo_hard_like``; and ``discopop``/``cell``, whose exp is clamped, so they equal the library only
  for rho > -20, where the library's own exp has not yet grown past e^20).
* ``check_tree`` is a cheap numeric pre-filter (one batched forward and backward on a fixed grid) that
  mirrors the sandbox's main rejection reasons: non-finite values or gradients for margins up to
  +-1000, no gradient w.r.t. one of the policy log-probs, or not preferring the chosen answer.

What it does not guarantee
--------------------------
* ``check_tree`` is not the sandbox: it is a heuristic used to bias generation, so a tree passing it
  can still be rejected downstream (and the other way round).
* Generation helpers (``random_tree``) bias toward losses that decrease in the margin but do not
  guarantee it; nothing here trains or scores a loss.

The package, one concern a module (each imports only from the ones above it)
-----------------------------------------------------------------------------
* ``tree``: the op tables, ``Tree``, ``TreeError``, validation and structure (children, paths, size).
* ``evaluation``: the scalar mirror (``const_value``) and the torch evaluation (``terminals``, ``evaluate``).
* ``rendering``: candidate source (``render``) and the compact formula (``to_infix``).
* ``simplification``: ``simplify`` and ``canonical_key``.
* ``monotone``: ``margin_sign`` and ``polarity``.
* ``seeds``: ``SEEDS`` and ``seed_trees``.
* ``generate``: ``random_const`` and ``random_tree``.
* ``prefilter``: ``check_tree``.

This ``__init__`` is the package's face: import the names above from
``lossforge.proposers.gp.expressions``.
"""

from lossforge.proposers.gp.expressions.tree import (
    BINARY_OPS,
    EXP_CLAMP,
    INCREASING_UNARY,
    NONMONOTONE_UNARY,
    TERMINALS,
    UNARY_OPS,
    Tree,
    TreeError,
    children,
    depth,
    get_at,
    has_vars,
    is_tree,
    normalize,
    op_names,
    replace_at,
    size,
    subtrees,
    validate,
    with_children,
)
from lossforge.proposers.gp.expressions.evaluation import const_value, evaluate, terminals
from lossforge.proposers.gp.expressions.rendering import render, to_infix
from lossforge.proposers.gp.expressions.simplification import canonical_key, simplify
from lossforge.proposers.gp.expressions.monotone import margin_sign, polarity
from lossforge.proposers.gp.expressions.seeds import SEEDS, seed_trees
from lossforge.proposers.gp.expressions.generate import random_const, random_tree
from lossforge.proposers.gp.expressions.prefilter import check_tree

__all__ = [
    "Tree",
    "TreeError",
    "TERMINALS",
    "UNARY_OPS",
    "INCREASING_UNARY",
    "NONMONOTONE_UNARY",
    "BINARY_OPS",
    "EXP_CLAMP",
    "SEEDS",
    "seed_trees",
    "validate",
    "normalize",
    "is_tree",
    "children",
    "with_children",
    "subtrees",
    "get_at",
    "replace_at",
    "size",
    "depth",
    "has_vars",
    "const_value",
    "terminals",
    "evaluate",
    "render",
    "to_infix",
    "simplify",
    "canonical_key",
    "margin_sign",
    "polarity",
    "op_names",
    "random_const",
    "random_tree",
    "check_tree",
]
