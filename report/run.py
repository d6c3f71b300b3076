"""`lossforge report DIR`: a self-contained HTML report and a Markdown report with PNG plots.

For a run directory (an archive): best fitness over evaluated candidates; the reward-vs-KL frontier of
the top losses against DPO and DiscoPOP across several betas (each loss screened again at each beta on
the run's own proxy settings, cached in `report/frontier.json`); each top loss's f(rho) and derivative
against DPO's; the reward-vs-KL path during the search's screens; the rejection funnel; and costs
(seconds per stage, LLM tokens and dollars when an LLM proposed). For a `lossforge bench discovery`
directory (a `discovery.json`): see `lossforge.report.bench`.

Guarantees: `report.html` needs no other file (images are data URIs, no script, no external resource);
`report.md` links the PNGs next to it. Candidate code is evaluated (shapes, frontier screens) through the
sandbox's `run`, never in this process.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossforge.rundir.archive import Archive, Candidate  # noqa: E402
from lossforge.sandbox.protocol import Sandbox, SandboxError  # noqa: E402
from lossforge.trainer.curves import loss_curve  # noqa: E402
from lossforge.report.render import Section, render_html, render_markdown  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402

DEFAULT_BETAS = (0.05, 0.1, 0.3)

RHOS = [x / 20 for x in range(-80, 81)]  # rho in [-4, 4]: where training margins live


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


def funnel_counts(candidates: list[Candidate]) -> dict[str, Any]:
    """How many candidates reached each stage, and the failed checks by name."""
    proposed = len(candidates)
    failed_proposals = sum(1 for c in candidates if c.status == "failed" and not c.code)
    rejected = [c for c in candidates if c.status == "rejected"]
    duplicates = sum(1 for c in candidates if c.status == "duplicate")
    screened = [c for c in candidates if c.status in ("evaluated", "degenerate", "failed", "screening") and c.code]
    scored = sum(1 for c in screened if c.fitness is not None)
    by_check: dict[str, int] = {}
    for c in rejected:
        by_check[c.failed_check or "unknown"] = by_check.get(c.failed_check or "unknown", 0) + 1
    return {
        "stages": [
            ("proposed", proposed),
            ("passed the checks", proposed - failed_proposals - len(rejected)),
            ("new (not a duplicate)", proposed - failed_proposals - len(rejected) - duplicates),
            ("screened", len(screened)),
            ("scored (not degenerate)", scored),
        ],
        "rejected_by_check": dict(sorted(by_check.items(), key=lambda kv: -kv[1])),
    }


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


def stage_costs(candidates: list[Candidate]) -> dict[str, dict[str, float]]:
    """Total and mean seconds per stage (propose, check, screen) over the candidates that ran it."""
    out: dict[str, dict[str, float]] = {}
    for stage in ("propose", "check", "screen"):
        values = [c.timings[stage] for c in candidates if stage in (c.timings or {})]
        if values:
            out[stage] = {"total": sum(values), "mean": sum(values) / len(values), "n": len(values)}
    return out


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


def _run_wall_seconds(run_dir: Path) -> float | None:
    """Seconds between each run_started/resumed and its run_stopped in events.jsonl, added up."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return None
    total, start = 0.0, None
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") in ("run_started", "run_resumed"):
            start = event.get("time")
        elif event.get("kind") == "run_stopped" and start is not None:
            total += event["time"] - start
            start = None
    return total or None


def frontier_screens(
    run_dir: Path,
    losses: dict[str, str],
    betas: tuple[float, ...],
    sandbox: Sandbox,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[float, dict[str, Any] | None]], list[str]]:
    """Each loss screened at each beta on the run's own proxy settings (cached in report/frontier.json)."""
    from lossforge.config import RunConfig
    from lossforge.trainer.proxy.api import prepare, screen_with_settings

    config_path = Path(run_dir) / "config.json"
    if not config_path.exists() or not betas:
        return {}, [] if not betas else ["no config.json in the run directory"]
    config = RunConfig.model_validate_json(config_path.read_text())
    seed, cache_dir = config.search.seed, config.resolved_cache_dir()
    prepare(config.proxy, seed, cache_dir)  # the sandbox sees the cache read-only
    cache_path = Path(run_dir) / "report" / "frontier.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    out: dict[str, dict[float, dict[str, Any] | None]] = {}
    errors: list[str] = []
    for name, code in losses.items():
        out[name] = {}
        for beta in betas:
            screen = config.proxy.screen.model_copy(update={"beta": beta}).model_dump()
            key = hashlib.sha256(json.dumps([code, screen, config.proxy.world.model_dump(), seed], sort_keys=True).encode()).hexdigest()[:20]
            if key not in cache:
                if progress:
                    progress(f"frontier: {name} at beta {beta:g}")
                try:
                    cache[key] = sandbox.run(
                        code, screen_with_settings, config.proxy.world.model_dump(), screen, seed, str(cache_dir),
                        timeout=config.sandbox.screen_timeout,
                    )
                except SandboxError as error:
                    cache[key] = None
                    errors.append(f"{name} at beta {beta:g}: {error.kind}: {error.message}")
                cache_path.write_text(json.dumps(cache))
            out[name][beta] = cache[key]
    return out, errors


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_with_error(value: float | None, stderr: float | None, digits: int = 4) -> str:
    """`value` +- its standard error (the error left out when unknown)."""
    return _fmt(value, digits) + (f" +- {stderr:.{digits}f}" if value is not None and stderr is not None else "")


def write_report(
    run_dir: Path,
    sandbox: Sandbox,
    top_k: int = 5,
    betas: tuple[float, ...] = DEFAULT_BETAS,
    frontier_k: int = 3,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write report.html, report.md and their PNGs into `run_dir/report/`; returns the Markdown path.

    A `lossforge bench discovery` directory (with discovery.json) gets the bench report instead.
    """
    if (Path(run_dir) / "discovery.json").exists() and not (Path(run_dir) / "archive.sqlite").exists():
        from lossforge.report.bench import write_bench_report

        return write_bench_report(Path(run_dir))
    archive = Archive(Path(run_dir) / "archive.sqlite", readonly=True)
    try:
        candidates = archive.all()
        top = archive.top(top_k)
        counts = archive.counts()
        llm_budget = archive.get_meta("llm_budget")
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

    frontier_losses = {f"#{c.id} {c.name}": c.code for c in top[:frontier_k]}
    frontier_losses.update({"dpo": library_code("dpo"), "discopop": library_code("discopop")})
    frontier, frontier_errors = frontier_screens(Path(run_dir), frontier_losses, tuple(betas), sandbox, progress)
    if frontier:
        plot_frontier(frontier, kl_budget, out / "frontier.png")

    funnel = funnel_counts(candidates)
    plot_funnel(funnel["stages"], out / "funnel.png")
    costs = stage_costs(candidates)
    wall = _run_wall_seconds(Path(run_dir))
    plot_costs(costs, wall, out / "costs.png")

    name = Path(run_dir).name
    status_line = f"Candidates: {len(candidates)} proposed; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + "."
    sections = [
        Section("Summary", [status_line, f"Fitness = true reward gain (in reference standard deviations) at KL budget {kl_budget} nats, beta {beta}."]),
        Section("Best fitness over evaluated candidates", image="best_fitness.png", image_alt="best fitness"),
        Section(
            "Top candidates",
            table=(
                ["rank", "id", "name", "fitness", "final KL", "parents", "operator"],
                [
                    [str(rank), str(c.id), c.name, f"{c.fitness:.4f}", _fmt((c.result or {}).get("final_kl"), 3), str(c.parent_ids), str(c.operator)]
                    for rank, c in enumerate(top, 1)
                ],
            ),
        ),
    ]
    frontier_text = [
        f"Each of the top {min(frontier_k, len(top))} losses, DPO and DiscoPOP trained again at beta "
        + ", ".join(f"{b:g}" for b in betas)
        + " on the run's own proxy settings (seed and world). Points: the checkpoints (marker: beta); thin lines: each"
        " beta's path, read at the KL budget (dotted) or where the loss stopped (stars: the fitness, read as the search reads"
        " it); thick lines: the upper envelope over all betas. Fitness +- its sampling standard error; a difference"
        " under twice the combined errors is noise."
    ]
    if frontier_errors:
        frontier_text.append("Not screened: " + "; ".join(frontier_errors))
    if frontier:
        rows = []
        for loss, per_beta in frontier.items():
            rows.append([loss] + [_fmt_with_error((r or {}).get("fitness"), (r or {}).get("fitness_stderr")) for r in per_beta.values()])
        sections.append(
            Section(
                "Reward-vs-KL frontier across betas (against DPO and DiscoPOP)",
                frontier_text,
                image="frontier.png",
                image_alt="reward vs KL frontier",
                table=(["loss"] + [f"fitness at beta {b:g}" for b in betas], rows),
            )
        )
    shape_text = ["Not plotted: " + "; ".join(shape_errors)] if shape_errors else []
    sections.append(Section("Loss shapes against DPO: f(rho) and its derivative", shape_text, image="loss_shapes.png", image_alt="loss shapes"))
    sections.append(Section("Reward against KL during the search's screens", image="reward_vs_kl.png", image_alt="reward vs KL"))
    sections.append(
        Section(
            "Rejection funnel",
            ["Each stage only sees what passed the one before: the unit checks in the sandbox, then the behavioural dedup, then the proxy screen."],
            image="funnel.png",
            image_alt="rejection funnel",
            table=(["failed check", "candidates"], [[k, str(v)] for k, v in funnel["rejected_by_check"].items()]) if funnel["rejected_by_check"] else None,
        )
    )
    cost_rows = [[stage, f"{v['mean']:.3f}", f"{v['total']:.1f}", str(int(v["n"]))] for stage, v in costs.items()]
    cost_text = []
    if wall is not None:
        cost_text.append(f"Wall time of the search (all invocations): {wall:.1f} s; the rest after the stages is the agent itself (graph, checkpoints, archive, events, dedup, reflection).")
    if llm_budget:
        evaluated = sum(1 for c in candidates if c.generation is not None) or None
        tokens = int(llm_budget.get("prompt_tokens", 0)) + int(llm_budget.get("completion_tokens", 0))
        cost_text.append(
            f"LLM: {llm_budget.get('calls', 0)} calls, {tokens} tokens, ${float(llm_budget.get('usd', 0.0)):.4f}"
            + (f"; per evaluated candidate {tokens / evaluated:.0f} tokens, ${float(llm_budget.get('usd', 0.0)) / evaluated:.4f}" if evaluated else "")
            + "."
        )
    sections.append(Section("Costs", cost_text, image="costs.png", image_alt="costs", table=(["stage", "mean s", "total s", "calls"], cost_rows)))
    for rank, c in enumerate(top[:3], 1):
        sections.append(Section(f"{rank}. #{c.id} {c.name} (fitness {c.fitness:.4f})", [c.thought or ""], code=c.code, level=3))

    title = f"lossforge run report: {name}"
    (out / "report.html").write_text(render_html(title, sections, out))
    path = out / "report.md"
    path.write_text(render_markdown(title, sections))
    return path


def report_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "report"
    return {
        "html": str(path / "report.html"),
        "markdown": str(path / "report.md"),
        "plots": sorted(str(p) for p in path.glob("*.png")),
    }
