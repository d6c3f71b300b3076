"""`lossforge report DIR`: a self-contained HTML report and a Markdown report with PNG plots.

For a run directory (an archive): best fitness over evaluated candidates; the reward-vs-KL frontier of
the top losses against DPO and DiscoPOP across several betas (each loss screened again at each beta on
the run's own proxy settings, cached in `report/frontier.json`); each top loss's f(rho) and derivative
against DPO's; the reward-vs-KL path during the search's screens; the rejection funnel; and costs
(seconds per stage, LLM tokens and dollars when an LLM proposed). For a `lossforge bench discovery`
directory (a `discovery.json`): see `lossforge.report.bench`; `lossforge.report.write_report` picks
which. The plots are drawn by `lossforge.report.plots` and `lossforge.tools.shapes`.

Guarantees: `report.html` needs no other file (images are data URIs, no script, no external resource);
`report.md` links the PNGs next to it. Candidate code is evaluated (shapes, frontier screens) through the
sandbox's `run`, never in this process.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from lossforge.report import DEFAULT_BETAS
from lossforge.report.plots import plot_best, plot_costs, plot_frontier, plot_funnel, plot_reward_kl
from lossforge.report.render import Section, render_html, render_markdown
from lossforge.rundir.archive import Archive, Candidate
from lossforge.rundir.funnel import Funnel
from lossforge.sandbox.protocol import Sandbox, SandboxError
from lossforge.tools.shapes import loss_shape, plot_shapes
from lossforge.trainer.losses import library_code

__all__ = ["write_run_report", "funnel_counts", "stage_costs", "frontier_screens"]


def funnel_counts(candidates: list[Candidate]) -> dict[str, Any]:
    """How many candidates reached each stage, and the failed checks by name (``rundir.funnel.Funnel``)."""
    funnel = Funnel.of(candidates)
    return {"stages": funnel.stages(), "rejected_by_check": funnel.rejected_by_check}


def stage_costs(candidates: list[Candidate]) -> dict[str, dict[str, float]]:
    """Total and mean seconds per stage (propose, check, screen) over the candidates that ran it."""
    out: dict[str, dict[str, float]] = {}
    for stage in ("propose", "check", "screen"):
        values = [c.timings[stage] for c in candidates if stage in (c.timings or {})]
        if values:
            out[stage] = {"total": sum(values), "mean": sum(values) / len(values), "n": len(values)}
    return out


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


def write_run_report(
    run_dir: Path,
    sandbox: Sandbox,
    top_k: int = 5,
    betas: tuple[float, ...] = DEFAULT_BETAS,
    frontier_k: int = 3,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write report.html, report.md and their PNGs into `run_dir/report/`; returns the Markdown path."""
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
            curves[name] = loss_shape(sandbox, code, beta, timeout=30)
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

