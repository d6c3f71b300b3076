"""The report of a `lossforge bench discovery` directory: HTML (self-contained) and Markdown with PNGs.

Reads `discovery.json` only (no screens, no candidate code run). Plots: best-so-far fitness against
evaluated candidates per proposer (mean over seeds and the min-max band) with the library's best as the
bar; the rejection funnel per proposer; held-out fitness of the best discovered losses against DPO and
DiscoPOP (mean and standard error over held-out seeds, per condition); costs per evaluated candidate
(screen, the agent's own orchestration, wall time).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossforge.rundir.funnel import Funnel  # noqa: E402
from lossforge.report.plots import save_figure  # noqa: E402
from lossforge.report.render import Section, render_html, render_markdown  # noqa: E402

__all__ = ["write_bench_report"]

_STAGE_LABELS = ["proposed", "passed checks", "new", "screened", "scored"]  # rundir.funnel.STAGE_NAMES, short


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    se = s.get("stderr")
    return f"{s['mean']:+.4f} ± {se:.4f} (n={s['n']})" if se is not None else f"{s['mean']:+.4f} (n={s['n']})"


def plot_best_so_far(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (kind, entry) in enumerate(result["proposers"].items()):
        rows = [r for r in entry["best_so_far"]["by_evaluations"] if r["mean"] is not None]
        xs = [r["evaluations"] for r in rows]
        ax.plot(xs, [r["mean"] for r in rows], color=f"C{i}", label=f"{kind} (mean of {len(entry['seeds'])} seeds)")
        ax.fill_between(xs, [r["min"] for r in rows], [r["max"] for r in rows], color=f"C{i}", alpha=0.18)
    bar = [r["fitness"] for r in result["library"]["per_seed_best"] if r["fitness"] is not None]
    if bar:
        ax.axhline(sum(bar) / len(bar), color="black", linestyle="--", label="library best (mean over seeds)")
    dpo = result.get("library_dpo_on_search_seeds") or {}
    if dpo.get("mean") is not None:
        ax.axhline(dpo["mean"], color="grey", linestyle=":", label="DPO (mean over seeds)")
    ax.set_xlabel("evaluated candidates")
    ax.set_ylabel("best fitness so far")
    ax.set_title("best-so-far fitness (band: min-max over seeds)")
    low = [r["min"] for e in result["proposers"].values() for r in e["best_so_far"]["by_evaluations"][4:] if r["min"] is not None]
    if low:
        ax.set_ylim(bottom=min(low + bar) - 0.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=110)


def plot_funnels(result: dict[str, Any], path: Path) -> None:
    kinds = list(result["proposers"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(kinds), 1)
    labels = _STAGE_LABELS
    for i, kind in enumerate(kinds):
        values = [n for _, n in Funnel.from_counts(result["proposers"][kind]["funnel"]).stages()]
        xs = [j + i * width for j in range(len(values))]
        ax.bar(xs, values, width=width, color=f"C{i}", label=kind)
        for x, v in zip(xs, values):
            ax.text(x, v, str(v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(kinds) - 1) / 2 for j in range(len(labels))], labels)
    ax.set_yscale("log")
    ax.set_ylabel("candidates (all seeds, log)")
    ax.set_title("rejection funnel")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def plot_heldout(result: dict[str, Any], path: Path) -> None:
    table = result["heldout"]
    labels = sorted(table, key=lambda k: table[k]["overall"]["mean"] or -1e9)
    conditions = list(next(iter(table.values()))["by_condition"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.8), gridspec_kw={"width_ratios": [1, 1.4]})
    means = [table[k]["overall"]["mean"] or 0.0 for k in labels]
    errs = [table[k]["overall"]["stderr"] or 0.0 for k in labels]
    colors = ["black" if k == "dpo" else "grey" if k == "discopop" else "C0" if k.startswith("evolution") else "C1" if k.startswith("random") else "C2" for k in labels]
    left.barh(range(len(labels)), means, xerr=errs, color=colors, capsize=3)
    left.set_yticks(range(len(labels)), [k if len(k) < 48 else k[:45] + "..." for k in labels], fontsize=7)
    left.set_xlabel("held-out fitness: mean over conditions, ± s.e. over seeds")
    left.set_title("held-out fitness")
    left.set_xlim(left=min(0.0, min(means)) - 0.05)
    for j, cond in enumerate(conditions):
        vals = [table[k]["by_condition"][cond]["mean"] or 0.0 for k in labels]
        right.scatter(vals, range(len(labels)), label=cond, s=18, marker="os^Dv"[j % 5])
    right.set_yticks(range(len(labels)), [""] * len(labels))
    right.set_xlabel("held-out fitness per condition (mean over seeds)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    save_figure(fig, path, dpi=110)


def plot_costs(result: dict[str, Any], path: Path) -> None:
    kinds = list(result["proposers"])
    parts = [("screen_per_evaluated", "screen"), ("orchestration_per_evaluated", "agent (graph, archive, events)"), ("wall_per_evaluated", "wall")]
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(parts)
    for j, (key, label) in enumerate(parts):
        values = [result["proposers"][k]["timing"].get(key) or 0.0 for k in kinds]
        xs = [i + j * width for i in range(len(kinds))]
        ax.bar(xs, values, width=width, label=label, color=f"C{j + 2}")
        for x, v in zip(xs, values):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + width for i in range(len(kinds))], kinds)
    ax.set_ylabel("seconds per evaluated candidate")
    ax.set_title("costs (mean over seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def write_bench_report(bench_dir: Path) -> Path:
    """Write report.html, report.md and PNGs into `bench_dir/report/`; returns the Markdown path."""
    result = json.loads((Path(bench_dir) / "discovery.json").read_text())
    out = Path(bench_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plot_best_so_far(result, out / "best_so_far.png")
    plot_funnels(result, out / "funnel.png")
    plot_heldout(result, out / "heldout.png")
    plot_costs(result, out / "costs.png")

    s = result["settings"]
    screen = s["search_proxy"]["screen"]
    timing = result.get("timing", {})
    machine = result.get("machine", {})
    sections = [
        Section(
            "Settings",
            [
                f"Search seeds {s['seeds']}, {s['evaluations']} evaluated candidates per proposer and seed; proposers {s['proposers']}"
                + (f"; skipped: {s['skipped']}" if s.get("skipped") else "") + ".",
                f"Search screen: {screen['steps']} steps of {screen['batch_pairs']} pairs, lr {screen['lr']}, beta {screen['beta']}, "
                f"{screen['checkpoints']} checkpoints of {screen['eval_samples']} samples, KL budget {screen['kl_budget']}; world with "
                f"{s['search_proxy']['world']['train_pairs']} training pairs.",
                f"Held-out: world seeds {s['heldout']['seeds']}, conditions "
                + ", ".join(c["name"] for c in s["heldout"]["conditions"]) + f". {s['heldout']['statistics']}.",
                f"Machine: {machine.get('cpus')} CPUs, load average {machine.get('load_average')} at the start, "
                f"{timing.get('load_average_end')} at the end; total {timing.get('total_seconds')} s.",
            ],
        ),
        Section("Best-so-far fitness against evaluations", image="best_so_far.png", image_alt="best so far"),
    ]
    rows = []
    for kind, e in result["proposers"].items():
        rows.append([kind, _pm(e["final_best"]), _pm(e["final_best_minus_library_best"]), _pm(e["heldout_minus_dpo_over_search_seeds"])])
    sections.append(Section("Proposers", table=(["proposer", "best at budget", "minus library best", "held-out minus DPO (over search seeds)"], rows)))
    comp_rows = [
        [name, _pm(c["search_best_at_budget"]), f"{c['seeds_won_search']}", _pm(c.get("heldout_of_bests")), str(c.get("seeds_won_heldout", "-"))]
        for name, c in result.get("comparisons", {}).items()
    ]
    if comp_rows:
        sections.append(
            Section(
                "Evolution against the other proposers (paired by seed)",
                ["'..._or_library': against the better of the other proposer's best and the library's best on the same seed "
                 "(the evolutionary proposer starts from the library losses, so this removes the library's part of its lead)."],
                table=(["comparison", "search best", "seeds won", "held-out of bests", "seeds won"], comp_rows),
            )
        )
    best_rows = []
    for kind, e in result["proposers"].items():
        b = e.get("best_discovered")
        if b:
            best_rows.append([kind, b["label"], _fmt(b["search_fitness"]), _pm(b["vs_dpo"]["overall"]), str(b["vs_dpo"]["wins_by_two_se"]), _pm(b["vs_discopop"]["overall"])])
    sections.append(
        Section(
            "Held-out evaluation",
            ["Each loss screened on world seeds and conditions no search saw. A discovered loss counts as better than DPO only if its held-out mean "
             "difference is more than two standard errors above 0."],
            image="heldout.png",
            image_alt="held-out fitness",
            table=(["proposer", "best discovered (by search fitness)", "search fitness", "held-out minus DPO", "> 2 s.e.", "held-out minus DiscoPOP"], best_rows),
        )
    )
    held_rows = [
        [label, _pm(v["overall"]), _pm((v.get("vs_dpo") or {}).get("overall")), str(len(v["failures"]))]
        for label, v in sorted(result["heldout"].items(), key=lambda kv: -(kv[1]["overall"]["mean"] or -1e9))
    ]
    sections.append(Section("All held-out losses", table=(["loss", "held-out fitness", "minus DPO", "failures"], held_rows), level=3))
    funnel_rows = []
    for kind, e in result["proposers"].items():
        f, fr = e["funnel"], e["funnel_fractions"]
        funnel_rows.append([kind, str(f["proposed"]), _fmt(fr["rejected_by_checks"], 3), _fmt(fr["duplicates_of_passed"], 3), _fmt(fr["degenerate_of_screened"], 3), json.dumps(f["rejected_by_check"])])
    sections.append(
        Section("Rejection funnel", image="funnel.png", image_alt="funnel",
                table=(["proposer", "proposed", "rejected by checks", "duplicates (of passed)", "degenerate (of screened)", "failed checks"], funnel_rows))
    )
    cost_rows = []
    for kind, e in result["proposers"].items():
        t = e["timing"]
        llm = e.get("llm") or {}
        cost_rows.append([kind, _fmt(t.get("wall_per_evaluated"), 3), _fmt(t.get("screen_per_evaluated"), 3), _fmt(t.get("orchestration_per_evaluated"), 3),
                          _fmt(t.get("orchestration_share_of_screen"), 3), _fmt(llm.get("tokens_per_evaluated"), 0), _fmt(llm.get("usd_per_evaluated"), 5)])
    sections.append(
        Section("Costs", ["Seconds per evaluated candidate, mean over seeds; the agent's own time is the loop's wall time minus the proposer, the checks and the screens."],
                image="costs.png", image_alt="costs",
                table=(["proposer", "wall s", "screen s", "agent s", "agent / screen", "LLM tokens", "LLM $"], cost_rows))
    )
    lib_rows = [[r["name"], _fmt(r["mean"]), _fmt(r["stderr"]), str(r["n"])] for r in result["library"]["ranking"]]
    sections.append(Section("The library on the search settings (the bar)", table=(["loss", "mean", "s.e.", "n"], lib_rows), level=3))
    for kind, e in result["proposers"].items():
        b = e.get("best_discovered")
        if b:
            sections.append(Section(f"Best discovered by {kind}: {b['label']}", code=b["code"], level=3))
    title = "lossforge bench discovery"
    (out / "report.html").write_text(render_html(title, sections, out))
    path = out / "report.md"
    path.write_text(render_markdown(title, sections))
    return path
