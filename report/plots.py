"""The plots of a run report (PNG files, matplotlib's Agg backend) and `save_figure`, which the bench
report's plots use too.

Each `plot_*` function draws one figure from data the report has already gathered (candidates, screens,
counts) and writes it to the given path; none runs candidate code. The loss-shape plot is
`lossforge.tools.shapes.plot_shapes` (the `plot_loss` tool draws the same figure).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossforge.rundir.archive import Candidate  # noqa: E402

__all__ = ["save_figure", "plot_best", "plot_reward_kl", "pareto", "plot_frontier", "plot_funnel", "plot_costs"]


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG and free it (the report's plots are many)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _best_so_far(candidates: list[Candidate]) -> tuple[list[int], list[float]]:
    evaluated = sorted((c for c in candidates if c.generation is not None), key=lambda c: c.generation)
    xs, ys, best = [], [], -math.inf
    for c in evaluated:
        if c.fitness is not None:
            best = max(best, c.fitness)
        if best > -math.inf:
            xs.append(c.generation)
            ys.append(best)
    return xs, ys


def plot_best(candidates: list[Candidate], path: Path) -> None:
    xs, ys = _best_so_far(candidates)
    points = [(c.generation, c.fitness) for c in candidates if c.fitness is not None and c.generation is not None]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if points:
        ax.scatter(*zip(*points), s=12, alpha=0.5, label="each evaluated candidate")
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set_xlabel("evaluated candidates")
    ax.set_ylabel("fitness (reward gain at KL budget)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)


def plot_reward_kl(candidates: list[Candidate], kl_budget: float | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, c in enumerate(candidates):
        steps = (c.result or {}).get("path") or []
        xs = [0.0] + [p["kl"] for p in steps]
        ys = [0.0] + [p["reward_gain"] for p in steps]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"#{c.id} {c.name}", color="black" if c.name == "dpo" else f"C{i}")
    if kl_budget:
        ax.axvline(kl_budget, color="grey", linestyle=":", label="KL budget")
    ax.set_xlabel("KL(policy || reference), nats")
    ax.set_ylabel("true reward gain (reference std)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left envelope of (kl, reward) points: the best reward reachable at each KL or less."""
    out: list[tuple[float, float]] = []
    best = -math.inf
    for kl, reward in sorted(points):
        if reward > best:
            best = reward
            out.append((kl, reward))
    return out


def plot_frontier(frontier: dict[str, dict[float, dict[str, Any] | None]], kl_budget: float | None, path: Path) -> None:
    """Per loss: every checkpoint at every beta (marker per beta), each beta's path (thin line) and its
    fitness reading at the KL budget (a star, read as the search reads it:
    `trainer.proxy.fitness.frontier_reading`); the thick line is the upper envelope over all betas."""
    from lossforge.trainer.proxy.fitness import frontier_reading

    fig, ax = plt.subplots(figsize=(7, 4.2))
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    betas = sorted({beta for per_beta in frontier.values() for beta in per_beta})
    for i, (name, per_beta) in enumerate(frontier.items()):
        color = "black" if name == "dpo" else ("grey" if name == "discopop" else f"C{i}")
        points = []
        for beta, result in per_beta.items():
            steps = (result or {}).get("path") or []
            xs = [p["kl"] for p in steps]
            ys = [p["reward_gain"] for p in steps]
            points += list(zip(xs, ys))
            ax.scatter(xs, ys, s=14, color=color, alpha=0.45, marker=markers[betas.index(beta) % len(markers)])
            if xs and kl_budget:
                ax.plot([0.0] + xs, [0.0] + ys, color=color, linewidth=0.8, alpha=0.6)
                reading = frontier_reading(list(zip(xs, ys)), kl_budget)
                ax.scatter([min(kl_budget, max(xs))], [reading], s=60, color=color, marker="*", zorder=3)
        envelope = pareto([(0.0, 0.0)] + points)
        if envelope:
            ax.plot(*zip(*envelope), color=color, linestyle="--" if name in ("dpo", "discopop") else "-", label=name)
    for j, beta in enumerate(betas):
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=f"beta {beta:g}")
    if kl_budget:
        ax.axvline(kl_budget, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("KL(policy || reference), nats")
    ax.set_ylabel("true reward gain (reference std)")
    ax.set_title("reward-vs-KL frontier across betas")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=110)


def plot_funnel(stages: list[tuple[str, int]], path: Path, title: str = "rejection funnel") -> None:
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    labels = [name for name, _ in stages][::-1]
    values = [n for _, n in stages][::-1]
    bars = ax.barh(labels, values, color=["C2" if i == 0 else "C0" for i in range(len(values))])
    top = max(values) if values else 1
    for bar, n in zip(bars, values):
        ax.text(bar.get_width() + 0.01 * max(top, 1), bar.get_y() + bar.get_height() / 2, str(n), va="center", fontsize=8)
    ax.set_xlim(0, max(top, 1) * 1.12)
    ax.set_title(title)
    ax.set_xlabel("candidates")
    save_figure(fig, path, dpi=110)


def plot_costs(costs: dict[str, dict[str, float]], wall: float | None, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.0))
    stages = list(costs)
    left.bar(stages, [costs[s]["mean"] for s in stages], color=["C0", "C1", "C2"][: len(stages)])
    left.set_yscale("log")
    left.set_ylabel("seconds per call (log)")
    left.set_title("mean time per stage")
    totals = [costs[s]["total"] for s in stages]
    labels = list(stages)
    if wall is not None:
        other = max(wall - sum(totals), 0.0)
        totals.append(other)
        labels.append("agent (graph, archive, events)")
    whole = sum(totals) or 1.0
    bars = right.barh(labels[::-1], [t / whole * 100 for t in totals][::-1], color="C0")
    for bar, t in zip(bars, totals[::-1]):
        right.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{t / whole:.1%} ({t:.1f} s)", va="center", fontsize=7)
    right.set_xlim(0, 130)
    right.set_xlabel("% of total")
    right.tick_params(axis="y", labelsize=7)
    right.set_title("share of the run's wall time" if wall is not None else "share of stage time")
    save_figure(fig, path, dpi=110)

