"""The `lossforge` command line: run, status, check, leaderboard, report, export, bench (proxy, sandbox, train, discovery).

Exit codes: 0 success; 1 a negative answer (e.g. `check` rejected the loss); 2 a usage error (bad
option, bad config, missing file) with a message saying what was wrong; 3 the run directory is busy.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lossforge.config import ConfigError, RunConfig, load_config

# rich_markup_mode=None: help texts are printed as written. With rich markup, bracketed words such as
# "[job]" or "[proxy.*]" are read as style tags and vanish from --help (tests/test_cli.py walks every command).
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Discover preference-optimisation losses.")
bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Benchmarks that print JSON.")
app.add_typer(bench_app, name="bench")
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")  # escaped: "[proposer]" in a message is text, not a style
    raise typer.Exit(code)


def _config(path: Optional[Path], overrides: dict[str, Any]) -> RunConfig:
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        _fail(str(error))
        raise  # unreachable


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _progress_printer(target_note: dict[str, Any]):
    def on_event(event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "preparing":
            err.print(f"[dim]{event['message']} (built once per seed, then cached)[/]")
        elif kind in ("run_started", "run_resumed"):
            target_note["target"] = event.get("target")
            verb = "resuming" if kind == "run_resumed" else "starting"
            err.print(f"[bold]{verb}[/]: {event['evaluated']} evaluated so far, target {event.get('target')}")
        elif kind == "check" and not event["passed"]:
            err.print(f"  [yellow]rejected[/] #{event['candidate_id']} {escape(event['name'])}: {escape(event['summary'][:160])}")
        elif kind == "duplicate":
            err.print(f"  [dim]duplicate[/] #{event['candidate_id']} {escape(event['name'])} behaves like #{event['duplicate_of']}")
        elif kind == "evaluated":
            fitness = event.get("fitness")
            shown = f"{fitness:+.4f}" if fitness is not None else f"[red]{event['status']}[/] {escape(str(event.get('error')))}"
            err.print(f"[{event['evaluated']:>4}/{target_note.get('target')}] #{event['candidate_id']} {escape(event['name'])}: {shown}")
        elif kind == "error":
            err.print(f"  [red]error[/] {escape(str(event.get('message')))}")
        elif kind == "run_stopped":
            best = event.get("best") or {}
            err.print(
                f"[bold]stopped[/] ({event.get('stop_reason')}): {event['evaluated']} evaluated; "
                f"best #{best.get('id')} {escape(str(best.get('name')))} fitness {best.get('fitness')}"
            )

    return on_event


@app.command()
def run(
    run_dir: Path = typer.Option(..., "--run-dir", help="Directory of the run: archive, checkpoints, events."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration (see README)."),
    generations: Optional[int] = typer.Option(None, "--generations", help="Evaluated candidates to add."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the proposer and the proxy world."),
    proposer: Optional[str] = typer.Option(None, "--proposer", help="evolution (default), random or llm."),
    model: Optional[list[str]] = typer.Option(
        None, "--model", metavar="MODEL", help="--proposer llm: the chat model (repeat for an equal-weight ensemble); replaces [proposer.llm] models."),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", metavar="URL", help="--proposer llm: any OpenAI-compatible endpoint (default https://api.openai.com/v1)."),
    api_key_env: Optional[str] = typer.Option(
        None, "--api-key-env", metavar="NAME", help="--proposer llm: environment variable holding the API key (default OPENAI_API_KEY; '' for a server without a key)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop after this much wall time."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where proxy worlds are cached."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Write every event to stdout as a JSON line."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
) -> None:
    """Run (or resume) a discovery search on the CPU proxy. Headless; safe to run from cron.

    With an LLM and no config file: --proposer llm --model M --base-url URL [--api-key-env NAME]."""
    from lossforge.rundir.lock import RunDirectoryBusy
    from lossforge.agent.runner import ConfigMismatch, run_search

    overrides: dict[str, Any] = {
        "search.generations": generations,
        "search.seed": seed,
        "proposer.kind": proposer,
        "search.max_minutes": max_minutes,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "proposer.llm.base_url": base_url,
        "proposer.llm.api_key_env": api_key_env,
    }
    settings = _config(config, overrides)
    if model or base_url is not None or api_key_env is not None:
        if settings.proposer.kind != "llm":
            _fail("--model, --base-url and --api-key-env set up the LLM proposer, which this run does not use: "
                  "add --proposer llm (or kind = \"llm\" under [proposer] in the config)")
        if model:  # a model the config already describes keeps its weight, temperature and max_tokens
            known = {m.name: m.model_dump() for m in settings.proposer.llm.models}
            overrides["proposer.llm.models"] = [known.get(name, {"name": name}) for name in dict.fromkeys(model)]
            settings = _config(config, overrides)
    llm = settings.proposer.llm
    if settings.proposer.kind == "llm" and llm.api_key_env and not os.environ.get(llm.api_key_env):
        _fail(f"--proposer llm reads the API key from the environment variable {llm.api_key_env}, which is not set: "
              "export your key there, name another variable with --api-key-env NAME, or give --api-key-env '' "
              "for a local server that needs no key")
    try:
        summary = run_search(
            run_dir,
            settings,
            echo_jsonl=sys.stdout if jsonl else None,
            on_event=None if quiet else _progress_printer({}),
            handle_signals=True,
        )
    except RunDirectoryBusy as error:
        _fail(str(error), code=3)
    except ConfigMismatch as error:
        _fail(str(error))
    except Exception as error:
        from lossforge.llm.client import LLMError

        if isinstance(error, LLMError):
            _fail(str(error))
        raise
    else:
        if not jsonl:
            err.print(f"[dim]status: lossforge status {run_dir} --json; report: lossforge report {run_dir}[/]")
        if summary.stop_reason and summary.stop_reason.startswith("stalled"):
            raise typer.Exit(1)


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Candidates of a run (id, name, status, fitness), the best, and counts. Safe while a run is going."""
    from lossforge.rundir.archive import Archive

    try:
        archive = Archive(run_dir / "archive.sqlite", readonly=True)
    except FileNotFoundError as error:
        _fail(str(error))
    try:
        candidates = archive.all()
        top = archive.top(1)
        data = {
            "run_dir": str(run_dir),
            "evaluated": archive.count_evaluated(),
            "counts": archive.counts(),
            "best": top[0].public() if top else None,
            "candidates": [c.public() for c in candidates],
        }
    finally:
        archive.close()
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"{run_dir}: {data['evaluated']} evaluated")
    for column in ("id", "gen", "name", "status", "fitness", "note"):
        table.add_column(column)
    for c in candidates:
        note = c.failed_check or (f"dup of #{c.duplicate_of}" if c.duplicate_of else "") or (c.error or "")
        table.add_row(str(c.id), str(c.generation or ""), escape(c.name), c.status, "" if c.fitness is None else f"{c.fitness:.4f}", escape(note[:40]))
    Console().print(table)


@app.command()
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


@app.command("import")
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


@app.command()
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


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    top: int = typer.Option(5, "--top", min=1, help="How many of the best candidates to show."),
    betas: str = typer.Option("0.05,0.1,0.3", "--betas", help="Betas of the reward-vs-KL frontier (comma-separated; empty: none)."),
    frontier_top: int = typer.Option(3, "--frontier-top", min=0, help="Top losses screened again for the frontier."),
) -> None:
    """Write RUN_DIR/report/report.html (self-contained) and report.md with PNG plots (a run or a bench directory)."""
    from lossforge.report.run import DEFAULT_BETAS, report_summary, write_report
    from lossforge.sandbox.process import ProcessSandbox

    if not (run_dir / "archive.sqlite").exists() and not (run_dir / "discovery.json").exists():
        _fail(f"no archive in {run_dir}: is this a lossforge run directory?")
    try:
        beta_values = tuple(float(b) for b in betas.split(",") if b.strip()) if betas is not None else DEFAULT_BETAS
    except ValueError:
        _fail(f"--betas must be comma-separated numbers, not {betas!r}")
    sandbox = ProcessSandbox()
    try:
        write_report(run_dir, sandbox, top_k=top, betas=beta_values, frontier_k=frontier_top, progress=lambda m: err.print(f"[dim]{m}[/]"))
    finally:
        sandbox.close()
    _print_json(report_summary(run_dir))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    candidate_id: int = typer.Argument(..., help="The candidate's id (see `lossforge status`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print (or write) one candidate as a standalone, importable Python module."""
    from lossforge.rundir.archive import Archive
    from lossforge.rundir.export import render_export

    try:
        archive = Archive(run_dir / "archive.sqlite", readonly=True)
    except FileNotFoundError as error:
        _fail(str(error))
    try:
        candidate = archive.get(candidate_id)
    except KeyError as error:
        _fail(str(error.args[0]))
    finally:
        archive.close()
    text = render_export(candidate, run_dir)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        err.print(f"wrote {out}")


@app.command()
def tui(
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Start (or resume) a search here and show it."),
    attach: Optional[Path] = typer.Option(None, "--attach", help="Watch a run started elsewhere, read-only."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration (with --run-dir)."),
    generations: Optional[int] = typer.Option(None, "--generations", help="Evaluated candidates to add."),
) -> None:
    """The terminal UI: watch the agent think, see every candidate, steer the search."""
    if (run_dir is None) == (attach is None):
        _fail("give exactly one of --run-dir DIR (start a search) or --attach DIR (watch one)")
    try:
        from lossforge.tui.app import LossforgeApp
    except ImportError as error:
        _fail(f"the TUI needs textual and textual-plotext, base dependencies of lossforge that this environment lacks "
              f"({error}): run ./scripts/setup.sh again (or pip install -e . in your environment)")
    if attach is not None:
        if not (attach / "archive.sqlite").exists() and not (attach / "events.jsonl").exists():
            _fail(f"nothing to attach to in {attach}: no archive.sqlite or events.jsonl")
        LossforgeApp(attach, config=_config(config, {}), attach=True).run()
        return
    LossforgeApp(run_dir, config=_config(config, {"search.generations": generations})).run()


@app.command()
def mcp(
    http: Optional[str] = typer.Option(
        None, "--http", metavar="HOST:PORT", help="Serve streamable HTTP at http://HOST:PORT/mcp (bearer token required) instead of stdio."
    ),
    token_env: str = typer.Option("LOSSFORGE_MCP_TOKEN", "--token-env", help="Environment variable holding the HTTP bearer token."),
    config: Optional[Path] = typer.Option(None, "--config", help="A lossforge run TOML ([proxy.*], [sandbox], cache_dir)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where proxy worlds are cached."),
) -> None:
    """Serve lossforge's tools (check, screen, compare, plot, archive, propose) over MCP; stdio by default."""
    try:
        from lossforge.tools.mcp_server import main as mcp_main
    except ImportError as error:
        _fail(f"the MCP server needs the 'mcp' extra: ./scripts/setup.sh mcp ({error})")
    argv = ["--token-env", token_env]
    if http:
        argv += ["--http", http]
    if config:
        argv += ["--config", str(config)]
    if cache_dir:
        argv += ["--cache-dir", str(cache_dir)]
    raise typer.Exit(mcp_main(argv))


@app.command()
def train(
    loss: Path = typer.Option(..., "--loss", help="A Python file defining one loss function."),
    config: Path = typer.Option(..., "--config", help="Job TOML: JobConfig keys, at the top level or under [job]."),
) -> None:
    """DPO-train a model with a candidate loss (TRL) and print the job's result as JSON."""
    import importlib.util

    missing = [name for name in ("trl", "accelerate", "datasets") if importlib.util.find_spec(name) is None]
    if missing:  # checked up front: trl is imported only once the job runs
        _fail(f"training needs the 'gpu' extra (trl, accelerate, datasets; missing: {', '.join(missing)}): "
              "./scripts/setup.sh gpu")
    try:
        from lossforge.trainer.bench_train import train_command
    except ImportError as error:
        _fail(f"training needs the 'gpu' extra (trl, accelerate, datasets): ./scripts/setup.sh gpu ({error})")
    raise typer.Exit(train_command(loss, config))


@bench_app.command("train")
def bench_train(
    steps: int = typer.Option(20, "--steps", min=1),
    repeats: int = typer.Option(3, "--repeats", min=1),
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print JSON (the default)."),
) -> None:
    """Steps/s and tokens/s of the candidate-loss trainer against TRL's sigmoid, and the reference-cache saving."""
    from lossforge.trainer.bench_train import bench_train as run_bench

    _print_json(run_bench(steps=steps, repeats=repeats))


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    start: bool = typer.Option(True, "--start/--no-start", help="Start a sandbox to measure the layers in effect (seconds)."),
) -> None:
    """The sandbox's isolation layers on this host (bubblewrap, namespaces, user switch) and how to get missing ones.

    Exit 1 when there is no namespace layer (backend "none") or the sandbox could not start."""
    from rich.table import Table

    from lossforge.sandbox.doctor import doctor as run_doctor

    report = run_doctor(start=start)
    if as_json:
        _print_json(report)
    else:
        out, host = Console(highlight=False), report["host"]
        out.print(
            f"[bold]backend[/] {report.get('backend')}  root {host['running_as_root']}  "
            f"bubblewrap {host['bubblewrap'] or 'not installed'} (works {host['bubblewrap_works']})  "
            f"unshare {host['unshare_works']}  user namespaces {host['user_namespaces_allowed']}"
        )
        table = Table("layer", "in effect")
        for name, value in report.get("layers", {}).items():
            table.add_row(name, "[red]absent[/]" if value is False else "[green]yes[/]" if value is True else str(value))
        out.print(table)
        docker = report.get("docker") or {}
        if docker.get("available"):
            out.print(f"[bold]docker backend[/] engine {docker['engine_version']}, image {docker['image']} "
                      f"({'present' if docker['image_present'] else 'made on first use'})")
        else:
            out.print(f"[bold]docker backend[/] unavailable: {docker.get('reason', '?')}")
        for what, why in report.get("problems", {}).items():
            out.print(f"[yellow]{what}[/]: {why}")
        for hint in report.get("hints", []):
            out.print(f"[dim]hint:[/] {hint}")
    if report.get("backend") in (None, "none") or "error" in report.get("layers", {}):
        raise typer.Exit(1)


@bench_app.command("sandbox")
def bench_sandbox(
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print JSON (the default)."),
    n: int = typer.Option(50, "--n", min=1, help="Sandboxed checks to time."),
    naive: Optional[int] = typer.Option(None, "--naive", min=0, help="Fresh `python -c` checks to time (default max(3, min(n, 10)); 0 skips)."),
    loss: str = typer.Option("dpo", "--loss"),
    isolation: str = typer.Option("auto", "--isolation", help="auto, bwrap, unshare or none."),
    docker: Optional[bool] = typer.Option(None, "--docker/--no-docker", help="Also time the Docker backend (default: when an engine answers)."),
) -> None:
    """Checks per second and p50/p95 latency of full sandboxed checks (isolated and Docker backends), next to a naive fresh `python -c` per check."""
    from lossforge.bench.sandbox import bench_sandbox as run_bench
    from lossforge.sandbox.protocol import SandboxError
    from lossforge.trainer.losses import LIBRARY

    if loss not in LIBRARY:
        _fail(f"unknown loss {loss!r}; library names are: {', '.join(LIBRARY)}")
    try:
        _print_json(run_bench(n, naive_n=naive, loss=loss, isolation=isolation, docker=docker))
    except (ValueError, SandboxError) as error:
        _fail(str(error))


@app.command()
def judge(
    benchmark: str = typer.Option(..., "--benchmark", help="mt_bench or arena_hard."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="Question file or folder: FastChat's MT-Bench folder, or an Arena-Hard-Auto version folder (data/arena-hard-v0.1 or arena-hard-v2.0, with question.jsonl and model_answer/; the older question-v0.1.jsonl also works)."),
    hf_dataset: Optional[str] = typer.Option(None, "--hf-dataset", help="Load the questions from this hub dataset instead."),
    answers: Optional[Path] = typer.Option(None, "--answers", help="The model's answers: FastChat model_answer jsonl, or Arena-Hard-Auto's (uid, messages with the answer in content.answer)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Generate the answers with this model (transformers, or vLLM if installed)."),
    answers_out: Optional[Path] = typer.Option(None, "--answers-out", help="Where to write generated answers."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="arena_hard: one answer file to judge every question against. Default: each category's upstream baseline from model_answer/ of the questions folder (v0.1: gpt-4-0314; v2.0: o3-mini-2025-01-31 for hard prompts, gemini-2.0-flash-001 for creative writing)."),
    judge_model: str = typer.Option("gpt-4o", "--judge-model", help="The judge model."),
    base_url: str = typer.Option("https://api.openai.com/v1", "--base-url", help="Any OpenAI-compatible endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key ('' for none)."),
    workers: int = typer.Option(8, "--workers", min=1, help="Judge calls in flight at once."),
    cache: Path = typer.Option(Path("~/.cache/lossforge/judgements.sqlite"), "--cache", help="On-disk judgement cache."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="USD per 1M prompt tokens of the judge."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="USD per 1M completion tokens of the judge."),
    max_usd: Optional[float] = typer.Option(None, "--max-usd", help="Stop before spending more than this (needs the prices)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions (a smoke run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap interval."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write every judgement and the score as JSON here (also a partial result when judge calls failed)."),
    judge_prompts: Optional[Path] = typer.Option(None, "--judge-prompts", help="mt_bench: FastChat's judge_prompts.jsonl (single-v1, single-math-v1 and their multi-turn forms, picked by category and turn as FastChat does), for scores comparable with published MT-Bench numbers. Default: the project's own judge prompt."),
    references: Optional[Path] = typer.Option(None, "--references", help="mt_bench: the reference answers for math, reasoning and coding (FastChat's reference_answer/gpt-4.jsonl), when they are not beside question.jsonl."),
) -> None:
    """Judge a model's answers with an LLM judge: MT-Bench (1-10) or Arena-Hard (win rate vs a baseline).

    Exit 0 when every question was judged; 1 when judge calls failed (the partial result is printed and
    written to --out, the failed questions are named, and running the same command again asks only for
    them) or the budget ran out; 2 on a usage error."""
    from pydantic import ValidationError

    from lossforge.evaluators.judge_run import JudgeIncomplete, JudgeRun, JudgeRunError, run_judge
    from lossforge.evaluators.llm_judge import JudgeSettings
    from lossforge.evaluators.questions import QuestionError
    from lossforge.llm.client import LLMError
    from lossforge.llm.cost import BudgetExhausted, Price, PriceError, PriceTable

    if benchmark not in ("mt_bench", "arena_hard"):
        _fail(f"--benchmark must be mt_bench or arena_hard, not {benchmark!r}")
    if max_usd is not None and (price_in is None or price_out is None):
        _fail("--max-usd needs the judge's prices: --price-in and --price-out (USD per 1M tokens)")
    priced = price_in is not None or price_out is not None
    prices = PriceTable(default=Price(input=price_in or 0.0, output=price_out or 0.0)) if priced else PriceTable()
    try:
        request = JudgeRun(
            benchmark=benchmark, questions=questions, hf_dataset=hf_dataset, answers=answers, model_path=model,
            answers_out=answers_out, baseline_answers=baseline, limit=limit,
            judge=JudgeSettings(model=judge_model, max_workers=workers), base_url=base_url,
            api_key_env=api_key_env or None, prices=prices, budget={"max_usd": max_usd}, cache=cache, seed=seed,
            judge_prompts=judge_prompts, references=references,
        )
        summary = run_judge(request, out=out)
    except JudgeIncomplete as error:
        _print_json(error.summary)
        for warning in error.summary.get("warnings", []):
            err.print(f"warning: {warning}", style="yellow", markup=False)
        _fail(str(error), code=1)
    except ValidationError as error:
        _fail(str(error))
    except (JudgeRunError, QuestionError, PriceError) as error:
        _fail(str(error))
    except BudgetExhausted as error:
        _fail(f"{error}; finished judgements are cached, so a rerun with a larger --max-usd continues", code=1)
    except LLMError as error:
        _fail(str(error), code=1)
    for warning in summary.get("warnings", []):
        err.print(f"warning: {warning}", style="yellow", markup=False)
    _print_json(summary)


@bench_app.command("proxy")
def bench_proxy(
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print JSON (the default)."),
    repeats: int = typer.Option(3, "--repeats", min=1),
    seed: int = typer.Option(0, "--seed"),
    loss: str = typer.Option("dpo", "--loss"),
    config: Optional[Path] = typer.Option(None, "--config"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="An empty directory times the world build too."),
) -> None:
    """Seconds per candidate on the proxy (one beta, one seed), and the one-off world build."""
    from lossforge.trainer.losses import LIBRARY
    from lossforge.bench.proxy import bench_proxy as run_bench

    if loss not in LIBRARY:
        _fail(f"unknown loss {loss!r}; library names are: {', '.join(LIBRARY)}")
    settings = _config(config, {"cache_dir": str(cache_dir) if cache_dir else None})
    _print_json(run_bench(settings.proxy, seed, settings.resolved_cache_dir(), repeats=repeats, loss=loss))


@bench_app.command("fidelity")
def bench_fidelity(
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print JSON (the default)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="World seeds, comma-separated."),
    published: Optional[Path] = typer.Option(
        None, "--published", help="The published reward-KL CSV (default: shared/data/published/discopop_imdb_calibration.csv next to the repository)."
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration (its [proxy] is used)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where proxy worlds are cached."),
) -> None:
    """The published losses on the proxy at the published betas, next to the DiscoPOP paper's GPT-2 IMDb
    measurements: the share of loss pairs in the paper's order (KL at equal beta, reward at matched KL)."""
    from lossforge.trainer.proxy.fidelity import default_published_path, load_published, run_fidelity

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        rows = load_published(published or default_published_path())
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if not seed_list:
        _fail("--seeds is empty: give world seeds such as 0,1,2")
    settings = _config(config, {"cache_dir": str(cache_dir) if cache_dir else None})
    result = run_fidelity(settings.proxy, rows, seed_list, settings.resolved_cache_dir(), progress=lambda m: err.print(f"[dim]{escape(m)}[/]"))
    if as_json:
        _print_json(result)
    else:
        err.print(f"agreement {result['agreement']:.0%} ({result['agreeing']} of {result['scored']}); checks: {result['checks']}")


@bench_app.command("discovery")
def bench_discovery(
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print the result as JSON (the default)."),
    out: Path = typer.Option(Path("runs/bench-discovery"), "--out", help="Directory for the searches' run directories and discovery.json."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Search seeds, comma-separated (default 0,1,2,3,4)."),
    evaluations: Optional[int] = typer.Option(None, "--evaluations", min=1, help="Evaluated candidates per proposer and seed (default 100)."),
    proposers: Optional[str] = typer.Option(None, "--proposers", help="Comma-separated: evolution, random, llm (default evolution,random)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="Searches and screens at once (default 2)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Bench settings as TOML (keys of DiscoveryBenchConfig; [run...] for the searches)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where proxy worlds are cached."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier bench in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
) -> None:
    """Proposers side by side at a fixed evaluation budget, the library bar, and held-out evaluation."""
    from lossforge.bench.discovery import load_bench_config, run_discovery_bench

    overrides: dict[str, Any] = {"evaluations": evaluations, "jobs": jobs}
    try:
        if seeds:
            overrides["seeds"] = [int(x) for x in seeds.split(",") if x.strip()]
        if proposers:
            overrides["proposers"] = [x.strip() for x in proposers.split(",") if x.strip()]
        if cache_dir:
            overrides["run"] = {"cache_dir": str(cache_dir)}
        settings = load_bench_config(config, overrides)
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    try:
        result = run_discovery_bench(settings, out, progress=None if quiet else (lambda m: err.print(f"[dim]{m}[/]")), overwrite=overwrite)
    except FileExistsError as error:
        _fail(str(error))
    if as_json:
        _print_json(result)
    else:
        err.print(f"wrote {out / 'discovery.json'}; report: lossforge report {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
