"""The `lossforge` command line: run, status, check, leaderboard, report, export, bench (proxy, sandbox, train, discovery).

Exit codes: 0 success; 1 a negative answer (e.g. `check` rejected the loss); 2 a usage error (bad
option, bad config, missing file) with a message saying what was wrong; 3 the run directory is busy.

This package is the face: ``app`` (the Typer application) and ``main`` (the ``lossforge`` script;
``python -m lossforge.cli`` runs it too). The commands live by topic in ``search`` (run, status, report,
export, tui, mcp), ``losses`` (check, import, leaderboard), ``bench`` (the bench sub-app and doctor)
and ``judge`` (train, judge); ``common`` holds what they share. They are registered here, in the order
``--help`` lists them.
"""
from __future__ import annotations

import typer

from lossforge.cli import bench, judge, losses, search

# rich_markup_mode=None: help texts are printed as written. With rich markup, bracketed words such as
# "[job]" or "[proxy.*]" are read as style tags and vanish from --help (tests/test_cli.py walks every command).
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Discover preference-optimisation losses.")
bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Benchmarks that print JSON.")
app.add_typer(bench_app, name="bench")

app.command()(search.run)
app.command()(search.status)
app.command()(losses.check)
app.command("import")(losses.import_loss)
app.command()(losses.leaderboard)
app.command()(search.report)
app.command()(search.export)
app.command()(search.tui)
app.command()(search.mcp)
app.command()(judge.train)
bench_app.command("train")(bench.bench_train)
app.command()(bench.doctor)
bench_app.command("sandbox")(bench.bench_sandbox)
app.command()(judge.judge)
bench_app.command("proxy")(bench.bench_proxy)
bench_app.command("fidelity")(bench.bench_fidelity)
bench_app.command("discovery")(bench.bench_discovery)
bench_app.command("scaling")(bench.bench_scaling)

__all__ = ["app", "bench_app", "main"]


def main() -> None:
    app()
