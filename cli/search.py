"""`lossforge run | status | report | export | tui | mcp`: the commands about a run directory.

`run` starts (or resumes) a search and prints its progress on stderr; `status` and `export` read the
archive read-only (safe while a run is going); `report` writes the run's (or bench's) report; `tui` and
`mcp` start the terminal UI and the MCP server. Exit codes as in `lossforge.cli`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lossforge.cli.common import _config, _fail, _print_json, err


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
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", metavar="K", help="Candidates in flight at once (replaces [search] concurrency; default 1: one at a time)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where proxy worlds are cached."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Write every event to stdout as a JSON line."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
) -> None:
    """Run (or resume) a discovery search on the CPU proxy. Headless; safe to run from cron.

    With an LLM and no config file: --proposer llm --model M --base-url URL [--api-key-env NAME]."""
    from lossforge.rundir.lock import RunDirectoryBusy
    from lossforge.agent.runner import run_search
    from lossforge.errors import UsageError
    from lossforge.llm.client import LLMError

    if concurrency is not None and concurrency < 1:
        _fail(f"--concurrency is the number of candidates in flight at once and must be at least 1, not {concurrency}: "
              "give --concurrency 1 for one candidate at a time")
    overrides: dict[str, Any] = {
        "search.generations": generations,
        "search.concurrency": concurrency,
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
    except (UsageError, LLMError) as error:  # bad settings (ConfigMismatch among them) or an LLM that cannot be used
        _fail(str(error))
    else:
        if not jsonl:
            err.print(f"[dim]status: lossforge status {run_dir} --json; report: lossforge report {run_dir}[/]")
        if summary.stop_reason and summary.stop_reason.startswith("stalled"):
            raise typer.Exit(1)


def status(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Candidates of a run (id, name, status, fitness), the best, counts, and the candidates in flight with
    what each is doing (proposing, checking, screening, training, ...). Safe while a run is going."""
    from lossforge.rundir.archive import Archive
    from lossforge.rundir.in_flight import in_flight

    try:
        archive = Archive(run_dir / "archive.sqlite", readonly=True)
    except FileNotFoundError as error:
        _fail(str(error))
    try:
        candidates = archive.all()
        top = archive.top(1)
        flying = in_flight(archive, candidates)
        data = {
            "run_dir": str(run_dir),
            "evaluated": archive.count_evaluated(),
            "counts": archive.counts(),
            "best": top[0].public() if top else None,
            "in_flight": [f.public() for f in flying],
            "candidates": [c.public() for c in candidates],
        }
    except ValueError as error:
        _fail(str(error))
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
    console = Console()
    console.print(table)
    if not flying:
        console.print("in flight: none")
        return
    flight = Table(title=f"in flight: {len(flying)}")
    for column in ("step", "id", "name", "stage"):
        flight.add_column(column)
    for f in flying:
        job = f" (job {escape(f.job_id or '-')}: {f.job_status})" if f.stage == "training" else ""
        flight.add_row(str(f.step), "" if f.candidate_id is None else str(f.candidate_id), escape(f.name or ""), f"{f.stage}{job}")
    console.print(flight)


def report(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    top: int = typer.Option(5, "--top", min=1, help="How many of the best candidates to show."),
    betas: str = typer.Option("0.05,0.1,0.3", "--betas", help="Betas of the reward-vs-KL frontier (comma-separated; empty: none)."),
    frontier_top: int = typer.Option(3, "--frontier-top", min=0, help="Top losses screened again for the frontier."),
) -> None:
    """Write RUN_DIR/report/report.html (self-contained) and report.md with PNG plots (a run or a bench directory)."""
    from lossforge.report import DEFAULT_BETAS, report_summary, write_report
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
