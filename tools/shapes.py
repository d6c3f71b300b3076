"""A loss's shape: f(rho) and df/drho sampled in the sandbox, DPO's for comparison, and their plot.

The one place that samples a loss's shape (the `plot_loss` tool, the TUI's plot and the run report all
call it): `loss_shape` runs `trainer.curves.loss_curve` on the candidate's code at the points
`trainer.curves.RHOS` through `sandbox.run`, so candidate code never runs in the caller's process.
A failure is the sandbox's `SandboxError`; each caller keeps its own policy for it (the tool raises a
`ToolError`, the TUI shows no curve, the report lists the loss as not plotted). `plot_shapes` draws
the curves side by side (f on the left, df/drho on the right, DPO dashed in black) into a PNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from lossforge.trainer.curves import RHOS, loss_curve

if TYPE_CHECKING:
    from lossforge.sandbox.protocol import Sandbox

__all__ = ["loss_shape", "dpo_shape", "plot_shapes"]


def loss_shape(sandbox: Sandbox, code: str, beta: float, *, timeout: float) -> dict[str, list[float]]:
    """{"rho", "value", "derivative"} of the loss in `code` at `RHOS`, sampled in `sandbox` (NaN where not
    finite). Raises the sandbox's `SandboxError` when the code cannot be run."""
    return sandbox.run(code, loss_curve, beta, RHOS, timeout=timeout)


def dpo_shape(sandbox: Sandbox, beta: float, *, timeout: float) -> dict[str, list[float]]:
    """DPO's shape (the library's source), the reference every plot shows."""
    from lossforge.trainer.losses import library_code

    return loss_shape(sandbox, library_code("dpo"), beta, timeout=timeout)


def _limits(series: list[list[float]], curves: dict[str, dict[str, list[float]]]) -> tuple[float, float]:
    """y-limits that show every curve on |rho| <= 2 (exponential tails beyond would flatten the rest)."""
    rhos = next(iter(curves.values()))["rho"] if curves else []
    inner = [v for values in series for rho, v in zip(rhos, values) if abs(rho) <= 2 and math.isfinite(v)]
    if not inner:
        return -1.0, 1.0
    low, high = min(inner), max(inner)
    pad = 0.15 * max(high - low, 0.5)
    return low - pad, high + pad


def plot_shapes(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, curve) in enumerate(curves.items()):
        style = {"color": "black", "linestyle": "--", "linewidth": 2} if name == "dpo" else {"color": f"C{i}"}
        left.plot(curve["rho"], curve["value"], label=name, **style)
        right.plot(curve["rho"], curve["derivative"], label=name, **style)
    left.set_title("loss f(rho)")
    right.set_title("derivative df/drho")
    for ax in (left, right):
        ax.set_xlabel("rho = beta * (log-ratio margin)")
        ax.grid(alpha=0.3)
    left.set_ylim(*_limits([c["value"] for c in curves.values()], curves))
    right.set_ylim(*_limits([c["derivative"] for c in curves.values()], curves))
    left.legend(fontsize=7)
    fig.tight_layout()  # as report.plots.save_figure (tools sit below report: no import of it)
    fig.savefig(path, dpi=120)
    plt.close(fig)
