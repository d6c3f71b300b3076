"""The shape of a loss: f(rho) and df/drho over the margin, as in the DiscoPOP paper's figures.

rho is the DPO logit, beta * ((pc - rc) - (pr - rr)). Each point is evaluated as a batch of one pair
(so losses that use batch statistics still give a curve), with the log-ratio split evenly between the
chosen (+margin/2) and the rejected (-margin/2) answer. Module-level and picklable: a sandbox runs it on
candidate code.
"""
from __future__ import annotations

from typing import Callable

import torch

RHOS = [x / 20 for x in range(-80, 81)]  # rho in [-4, 4]: where training margins live
"""Where a loss's shape is sampled (`tools.shapes`): 161 points of rho in [-4, 4]."""


def loss_curve(loss_fn: Callable[..., torch.Tensor], beta: float, rhos: list[float]) -> dict[str, list[float]]:
    """Values and derivatives of `loss_fn` along rho; non-finite points come back as NaN."""
    values, derivatives = [], []
    for rho in rhos:
        margin = torch.tensor([rho / beta], dtype=torch.float64, requires_grad=True)
        chosen = margin / 2
        rejected = -margin / 2
        zero = torch.zeros(1, dtype=torch.float64)
        try:
            loss = loss_fn(chosen, rejected, zero, zero, beta).sum()
            (grad,) = torch.autograd.grad(loss, margin, allow_unused=True)
            values.append(float(loss))
            # d/drho = d/dmargin * dmargin/drho = grad / beta
            derivatives.append(float(grad) / beta if grad is not None else 0.0)
        except Exception:
            values.append(float("nan"))
            derivatives.append(float("nan"))
    return {"rho": list(rhos), "value": values, "derivative": derivatives}
