"""`lossforge check | import | leaderboard`: one loss file through the checks, losses in other forms into
the candidate form, and the loss library on the proxy. Exit codes as in `lossforge.cli`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lossforge.cli.common import _config, _fail, _print_json, err


def check(
    file: Path = typer.Argument(..., help="A Python file defining one loss function."),
    as_json: bool = typer.Option(False, "--json", help="Print the check report as JSON."),
    beta: float = typer.Option(0.1, "--beta", help="beta passed to the loss, in (0, 10]."),
) -> None:
    """Run the unit checks on one loss file. Exit 0 if it passes, 1 if rejected, 2 on a usage error."""
    if not 0 < beta <= 10:  # also refuses nan
        _fail(f"--beta must be in (0, 10], not {beta}: beta is DPO's inverse temperature, the scale of the "
              "policy/reference log-ratio margin (0 makes every loss flat, a negative beta reverses chosen and "
              "rejected); typical values are 0.05 to 0.5, e.g. --beta 0.1")
    if not file.is_file():
        _fail(f"{file} is not a file: give the path of a Python file that defines one loss function")
    from lossforge.sandbox.process import ProcessSandbox

    source = file.read_text()
    sandbox = ProcessSandbox()
    try:
        report = sandbox.check(source, beta=beta)
    finally:
        sandbox.close()
    hint = None
    if report.failed_check == "policy":
        from lossforge.candidate.importer import import_hint

        hint = import_hint(source)
    if as_json:
        _print_json({**report.model_dump(), **({"import_hint": hint} if hint else {})})
    else:
        colour = "green" if report.passed else "red"
        Console().print(f"[{colour}]{'PASS' if report.passed else 'REJECTED'}[/] {escape(str(file))}: {escape(report.summary())}")
        for c in report.checks:
            Console().print(f"  {'ok ' if c.passed else 'FAIL'} {c.name} {escape(c.evidence) if not c.passed else ''}")
        _print_check_warnings(report)
        if hint:
            Console().print(f"[bold]hint:[/] {escape(hint.replace('FILE', str(file)))}")
    raise typer.Exit(0 if report.passed else 1)


def _print_check_warnings(report: Any, console: Optional[Console] = None, indent: str = "  ") -> None:
    """The check report's warnings: non-finite values beyond the margins training reaches, the loss's own warnings."""
    console = console or Console()
    beyond = report.properties.get("beyond_training_range") or []
    if beyond:
        from lossforge.candidate.checks import TRAINING_MARGIN_LIMIT

        console.print(f"{indent}[yellow]warning[/] beyond the margins training reaches (|beta*margin| <= "
                        f"{TRAINING_MARGIN_LIMIT:g}), not a rejection: {escape(beyond[0])}"
                        + (f" (and {len(beyond) - 1} more)" if len(beyond) > 1 else "")
                        + " Training stays finite: the proxy screen and the TRL job stop at the first non-finite "
                          "loss or gradient, before the optimiser step, and mark the candidate degenerate.")
    for w in report.properties.get("warnings") or []:
        console.print(f"{indent}[yellow]warning[/] raised by the loss: {escape(str(w))}")


def import_loss(
    file: Path = typer.Argument(..., help="A Python file with loss code: trainer methods (DiscoPOP), a TRL dpo_loss "
                                          "override, a function with TRL's argument names, or a candidate."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the candidate to this file (a directory when "
                                                                 "several losses are imported: DIR/NAME.py); default: print it."),
    function: Optional[str] = typer.Option(None, "--function", "-f", help="Import only this function (NAME or Class.NAME)."),
    settings: list[str] = typer.Option([], "--set", help="NAME=VALUE for a trainer attribute or an extra parameter, "
                                                         "e.g. --set loss_type=hinge --set label_smoothing=0.1 (repeatable)."),
    beta: float = typer.Option(0.1, "--beta", help="beta for the checks, in (0, 10]."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Bring a loss in the forms people have into the candidate form, check it in the sandbox and say what
    changed. Exit 0 if every loss imported and passed, 1 if one was refused or rejected, 2 on a usage error."""
    from lossforge.candidate.importer import ImportError_, import_file, parse_settings

    if not 0 < beta <= 10:
        _fail(f"--beta must be in (0, 10], not {beta}; typical values are 0.05 to 0.5, e.g. --beta 0.1")
    if not file.is_file():
        _fail(f"{file} is not a file: give the path of a Python file with the loss function")
    try:
        result = import_file(file, function=function, settings=parse_settings(settings))
    except (ImportError_, ValueError) as error:
        _fail(str(error))
        raise  # unreachable
    several = len(result.imported) > 1
    if several and (out is None or out.suffix == ".py"):
        names = ", ".join(loss.qualname for loss in result.imported)
        _fail(f"{file} holds {len(result.imported)} losses ({names}): give -o DIR to write each as DIR/NAME.py, "
              "or pick one with --function NAME")
    from lossforge.sandbox.process import ProcessSandbox

    rows: list[dict[str, Any]] = []
    sandbox = ProcessSandbox()
    try:
        for loss in result.imported:
            report = sandbox.check(loss.code, beta=beta)
            path = None
            if out is not None:
                path = out / f"{loss.name}.py" if several or out.is_dir() else out
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(loss.code)
            rows.append({"name": loss.name, "qualname": loss.qualname, "changes": loss.changes,
                         "path": str(path) if path else None, "code": loss.code, "check": report})
    finally:
        sandbox.close()
    ok = bool(rows) and not result.refused and all(r["check"].passed for r in rows)
    if as_json:
        _print_json({"imported": [{**r, "check": r["check"].model_dump()} for r in rows],
                     "refused": [{"name": q, "reason": why} for q, why in result.refused]})
        raise typer.Exit(0 if ok else 1)
    console = Console(stderr=out is None and len(rows) == 1, highlight=False, soft_wrap=True)
    for r in rows:
        report = r["check"]
        verdict = "[green]PASS[/]" if report.passed else "[red]REJECTED[/]"
        where = f" -> {escape(r['path'])}" if r["path"] else ""
        console.print(f"[bold]imported[/] {escape(r['qualname'])} as `{escape(r['name'])}`{where}; checks: {verdict} "
                      f"{escape(report.summary()) if not report.passed else ''}")
        for change in r["changes"] or ["nothing: already in the candidate form"]:
            console.print(f"  changed: {escape(change)}")
        if report.passed:
            _print_check_warnings(report, console)
    for qualname, why in result.refused:
        console.print(f"[red]refused[/] {escape(qualname)}: {escape(why)}")
    if out is None and len(rows) == 1:
        sys.stdout.write(rows[0]["code"])
    raise typer.Exit(0 if ok else 1)


def leaderboard(
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds (0..K-1)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration (its [proxy] is used)."),
    losses: Optional[str] = typer.Option(None, "--losses", help="Comma-separated library names (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The loss library on the proxy: mean fitness and standard error over seeds."""
    from lossforge.trainer.losses import LIBRARY
    from lossforge.trainer.proxy.leaderboard import leaderboard as run_leaderboard

    settings = _config(config, {})
    names = [n.strip() for n in losses.split(",")] if losses else None
    unknown = [n for n in names or [] if n not in LIBRARY]
    if unknown:
        _fail(f"unknown loss(es) {unknown}; library names are: {', '.join(LIBRARY)}")
    rows = run_leaderboard(
        settings.proxy, list(range(seeds)), settings.resolved_cache_dir(), names, progress=lambda m: err.print(f"[dim]{m}[/]")
    )
    if as_json:
        _print_json({"seeds": seeds, "beta": settings.proxy.screen.beta, "kl_budget": settings.proxy.screen.kl_budget, "rows": [r.model_dump() for r in rows]})
        return
    from rich.table import Table

    table = Table(title=f"proxy leaderboard ({seeds} seeds, beta {settings.proxy.screen.beta})")
    for column in ("loss", "mean fitness", "std err", "final KL"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.name + (" (control)" if r.control else ""),
            "-" if r.mean is None else f"{r.mean:+.4f}",
            "-" if r.stderr is None else f"{r.stderr:.4f}",
            "-" if r.final_kl_mean is None else f"{r.final_kl_mean:.3f}",
        )
    Console().print(table)
