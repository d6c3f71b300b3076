"""The library losses expressible in the language (``SEEDS``), which the evolutionary proposer emits first.

What this module guarantees
---------------------------
* ``SEEDS`` is in a fixed order and already in simplified form (see their comments for the two that
  differ from the library by a factor beta^2: ``ipo_like``, ``sppo_hard_like``; and
  ``discopop``/``cell``, whose exp is clamped, so they equal the library only for rho > -20).
* ``seed_trees`` returns fresh copies, so a caller may modify them.
"""

from __future__ import annotations

import copy
import math

from lossforge.proposers.gp.expressions.tree import Tree


# --------------------------------------------------------------------------------------------------
# Seeds: library losses expressible in the language
# --------------------------------------------------------------------------------------------------

_NEG_RHO: Tree = ["neg", "rho"]

#: name -> tree, in the order the evolutionary proposer emits them. All terminals are beta-scaled.
SEEDS: dict[str, Tree] = {
    # DPO: -logsigmoid(rho) = softplus(-rho).
    "dpo": ["softplus", _NEG_RHO],
    # SLiC / hinge: relu(1 - rho).
    "slic": ["relu", ["sub", ["const", 1.0], "rho"]],
    # IPO on the beta-scaled margin: (rho - 1/2)^2 = beta^2 * (margin - 1/(2 beta))^2, i.e. the library
    # IPO times beta^2 (the language has no 1/beta), hence "like".
    "ipo_like": ["square", ["sub", "rho", ["const", 0.5]]],
    # DiscoPOP / LRML, tau = 0.05: (1-g) softplus(-rho) + g exp(-rho), g = sigmoid(rho / 0.05). Equal to
    # the library for rho > -20; below, exp is clamped (its weight g is 0 there, so only NaNs differ).
    "discopop": ["mix", ["softplus", _NEG_RHO], ["exp", _NEG_RHO], "rho", 0.05],
    # NCA-pair: softplus(-c) + 0.5 softplus(c) + 0.5 softplus(r).
    "nca_pair": [
        "add",
        ["add", ["softplus", ["neg", "c"]], ["scale", 0.5, ["softplus", "c"]]],
        ["scale", 0.5, ["softplus", "r"]],
    ],
    # BCO-pair (TRL 1.x, no reward shift): softplus(-c) + softplus(r).
    "bco_pair": ["add", ["softplus", ["neg", "c"]], ["softplus", "r"]],
    # APO-zero: (1 - sigmoid(c)) + sigmoid(r).
    "apo_zero": ["add", ["sub", ["const", 1.0], ["sigmoid", "c"]], ["sigmoid", "r"]],
    # SPPO-hard on beta-scaled log-ratios: (c - 1/2)^2 + (r + 1/2)^2 = beta^2 * library sppo_hard.
    "sppo_hard_like": [
        "add",
        ["square", ["sub", "c", ["const", 0.5]]],
        ["square", ["add", "r", ["const", 0.5]]],
    ],
    # Robust DPO, eps = 0.1: (0.9 softplus(-rho) - 0.1 softplus(rho)) / 0.8.
    "robust_dpo": ["sub", ["scale", 1.125, ["softplus", _NEG_RHO]], ["scale", 0.125, ["softplus", "rho"]]],
    # CELL: 0.5 exp(-rho) + 0.5 softplus(-rho).
    "cell": ["add", ["scale", 0.5, ["exp", _NEG_RHO]], ["scale", 0.5, ["softplus", _NEG_RHO]]],
    # EXO-pair, eps = 1e-3: sigmoid(rho)(logsigmoid(rho) - log(1-eps)) + sigmoid(-rho)(logsigmoid(-rho) - log eps).
    "exo_pair": [
        "add",
        ["mul", ["sigmoid", "rho"], ["add", ["logsigmoid", "rho"], ["const", -math.log1p(-1e-3)]]],
        ["mul", ["sigmoid", _NEG_RHO], ["add", ["logsigmoid", _NEG_RHO], ["const", -math.log(1e-3)]]],
    ],
}


def seed_trees(names: list[str] | None = None) -> list[tuple[str, Tree]]:
    """(name, tree) for the seeds (all, or ``names`` in the given order), as fresh copies."""
    chosen = list(SEEDS) if names is None else list(names)
    unknown = [n for n in chosen if n not in SEEDS]
    if unknown:
        raise KeyError(f"unknown seeds {unknown}; valid names: {', '.join(SEEDS)}")
    return [(n, copy.deepcopy(SEEDS[n])) for n in chosen]
