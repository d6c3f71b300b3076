"""`lossforge report DIR`: a Markdown report with PNG plots of a run.

Plots: best fitness over evaluated candidates, the top losses' shape f(rho) and derivative against
DPO's, and the reward-vs-KL path of the top losses during training. Candidate code is evaluated for the
shape plots through the sandbox's `run`, never in this process.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossforge.agent.archive import Archive, Candidate  # noqa: E402
from lossforge.sandbox.protocol import Sandbox, SandboxError  # noqa: E402
from lossforge.trainer.curves import loss_curve  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402

RHOS = [x / 20 for x in range(-80, 81)]  # rho in [-4, 4]: where training margins live


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, sandbox: Sandbox, top_k: int = 5) -> Path:
    """Write report.md and its PNGs into `run_dir/report/`; returns the Markdown path."""
    archive = Archive(Path(run_dir) / "archive.sqlite", readonly=True)
    try:
        candidates = archive.all()
        top = archive.top(top_k)
        counts = archive.counts()
    finally:
        archive.close()
    out = Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    beta = next(((c.result or {}).get("beta") for c in top if c.result), 0.1) or 0.1
    kl_budget = next(((c.result or {}).get("kl_budget") for c in top if c.result), None)

    plot_best(candidates, out / "best_fitness.png")
    curves: dict[str, dict[str, list[float]]] = {}
    shape_errors: list[str] = []
    for name, code in [("dpo", library_code("dpo"))] + [(f"#{c.id} {c.name}", c.code) for c in top]:
        try:
            curves[name] = sandbox.run(code, loss_curve, beta, RHOS, timeout=30)
        except SandboxError as error:
            shape_errors.append(f"{name}: {error.kind}: {error.message}")
    plot_shapes(curves, out / "loss_shapes.png")
    plot_reward_kl(top, kl_budget, out / "reward_vs_kl.png")

    lines = [
        f"# lossforge run report: {Path(run_dir).name}",
        "",
        f"Candidates: {len(candidates)} proposed; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".",
        f"Fitness = true reward gain (in reference standard deviations) at KL budget {kl_budget} nats, beta {beta}.",
        "",
        "## Best fitness over evaluated candidates",
        "![best fitness](best_fitness.png)",
        "",
        "## Top candidates",
        "",
        "| rank | id | name | fitness | final KL | parents | operator |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, c in enumerate(top, 1):
        final_kl = (c.result or {}).get("final_kl")
        lines.append(
            f"| {rank} | {c.id} | {c.name} | {c.fitness:.4f} | {final_kl:.3f} | {c.parent_ids} | {c.operator} |"
            if final_kl is not None
            else f"| {rank} | {c.id} | {c.name} | {c.fitness:.4f} | - | {c.parent_ids} | {c.operator} |"
        )
    lines += ["", "## Loss shapes against DPO", "![loss shapes](loss_shapes.png)", ""]
    if shape_errors:
        lines += ["Not plotted: " + "; ".join(shape_errors), ""]
    lines += ["## Reward against KL during training", "![reward vs KL](reward_vs_kl.png)", ""]
    for rank, c in enumerate(top[:3], 1):
        lines += [f"### {rank}. #{c.id} {c.name} (fitness {c.fitness:.4f})", "", f"{c.thought or ''}", "", "```python", c.code.strip(), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def report_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "report"
    return {"markdown": str(path / "report.md"), "plots": sorted(str(p) for p in path.glob("*.png"))}
