"""The cheap numeric pre-filter (``check_tree``): one batched forward and backward on a fixed grid.

What this module guarantees
---------------------------
* ``check_tree`` mirrors the sandbox's main rejection reasons: non-finite values or gradients for margins
  up to +-1000, no gradient w.r.t. one of the policy log-probs, or not preferring the chosen answer. The
  grid is fixed (seeded), so the verdict on a tree is deterministic.

What it does not guarantee
--------------------------
* It is not the sandbox: it is a heuristic used to bias generation, so a tree passing it can still be
  rejected downstream (and the other way round).
"""

from __future__ import annotations

import random

import torch

from lossforge.proposers.gp.expressions.evaluation import evaluate
from lossforge.proposers.gp.expressions.tree import Tree, TreeError, has_vars, validate


# --------------------------------------------------------------------------------------------------
# Cheap numeric pre-filter
# --------------------------------------------------------------------------------------------------

_MARGINS = (-1000.0, -300.0, -30.0, -3.0, -0.3, 0.0, 0.3, 3.0, 30.0, 300.0, 1000.0)
_PREF_MARGINS = (1.0, 3.0, 5.0, 30.0, 300.0, 1000.0)
_PREF_SPLITS = (0.0, 0.25, 0.5, 0.75, 1.0)  # share of the margin carried by the chosen log-ratio
_ORDINARY = 33  # the first _ORDINARY grid points have ordinary log-ratios (|c|, |r| <= 8)


def _grid() -> tuple[list[float], list[float], list[tuple[int, int]]]:
    cs: list[float] = []
    rs: list[float] = []
    g = random.Random(0)
    for _ in range(_ORDINARY):  # like log-probs in [-80, -1] with beta = 0.1
        cs.append(round(g.uniform(-8.0, 8.0), 3))
        rs.append(round(g.uniform(-8.0, 8.0), 3))
    for o in (-500.0, 0.0, 500.0):
        for m in _MARGINS:
            cs.append(o + m / 2)
            rs.append(o - m / 2)
    pref: list[tuple[int, int]] = []  # (index of the pair at +m, index of its mirror at -m)
    for m in _PREF_MARGINS:
        for share in _PREF_SPLITS:
            pref.append((len(cs), len(cs) + 1))
            cs += [share * m, (share - 1.0) * m]  # (c, r) then its mirror (r, c)
            rs += [(share - 1.0) * m, share * m]
    return cs, rs, pref


_GRID_C, _GRID_R, _GRID_PREF = _grid()


def check_tree(tree: Tree) -> str | None:
    """None if the tree passes the cheap checks, else the reason it fails.

    Mirrors the sandbox's checks on a fixed float32 grid: values and gradients finite for margins up to
    +-1000 (chosen/rejected log-ratios up to +-1000 too); a non-zero gradient w.r.t. both the policy
    chosen and rejected log-probs at ordinary log-ratios (|c|, |r| <= 8); and for margins 1, 3, 5, 30,
    300, 1000 the mean loss over five splits of the margin between chosen and rejected is below that of
    the mirrored pairs (chosen and rejected swapped).
    """
    try:
        validate(tree)
    except TreeError as exc:
        return f"malformed: {exc}"
    if not has_vars(tree):
        return "constant: no gradient"
    c = torch.tensor(_GRID_C, dtype=torch.float32, requires_grad=True)
    r = torch.tensor(_GRID_R, dtype=torch.float32, requires_grad=True)
    rho = c - r
    losses = evaluate(tree, rho, c, r)
    if losses.shape != c.shape:
        return f"shape {tuple(losses.shape)}"
    if not bool(torch.isfinite(losses).all()):
        return "non-finite values"
    losses.sum().backward()
    # c.grad and r.grad are the gradients w.r.t. the policy chosen / rejected log-probs, divided by beta
    grads = [g if g is not None else torch.zeros_like(c) for g in (c.grad, r.grad)]
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return "non-finite gradients"
    for g, which in zip(grads, ("chosen", "rejected")):
        if not bool((g[:_ORDINARY] != 0).any()):
            return f"zero gradient w.r.t. the policy {which} log-probs at ordinary margins"
    vals = losses.detach()
    n = len(_GRID_PREF) // len(_PREF_MARGINS)
    for i in range(len(_PREF_MARGINS)):
        block = _GRID_PREF[i * n:(i + 1) * n]
        pos = sum(float(vals[a]) for a, _ in block)
        neg = sum(float(vals[b]) for _, b in block)
        if not pos < neg:
            return f"does not prefer chosen at margin {_PREF_MARGINS[i]:g}"
    return None
