"""lossforge.report: HTML and Markdown reports of a run directory or a bench directory.

The package face (the command line imports from here): `write_report(dir, sandbox, ...)` writes the
report of a run directory (`lossforge.report.run`, which screens and samples candidate code in the
sandbox) or, for a `lossforge bench discovery` directory (a discovery.json and no archive), the bench
report (`lossforge.report.bench`, which runs no code); `report_summary(dir)` names the files written.
`report.plots` draws the figures, `report.render` renders the sections as Markdown and as one
self-contained HTML file. Importing the package loads neither matplotlib nor torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from lossforge.sandbox.protocol import Sandbox

__all__ = ["DEFAULT_BETAS", "write_report", "report_summary"]

DEFAULT_BETAS = (0.05, 0.1, 0.3)
"""The betas of a run report's reward-vs-KL frontier."""


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
    from lossforge.report.run import write_run_report

    return write_run_report(run_dir, sandbox, top_k=top_k, betas=betas, frontier_k=frontier_k, progress=progress)


def report_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "report"
    return {
        "html": str(path / "report.html"),
        "markdown": str(path / "report.md"),
        "plots": sorted(str(p) for p in path.glob("*.png")),
    }
