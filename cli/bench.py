"""`lossforge bench train | sandbox | proxy | fidelity | discovery | scaling` (benchmarks that print JSON) and
`lossforge doctor` (the sandbox's isolation layers on this host). Exit codes as in `lossforge.cli`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lossforge.cli.common import _config, _fail, _print_json, err
from lossforge.config import ConfigError


def bench_train(
    steps: int = typer.Option(20, "--steps", min=1),
    repeats: int = typer.Option(3, "--repeats", min=1),
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print JSON (the default)."),
) -> None:
    """Steps/s and tokens/s of the candidate-loss trainer against TRL's sigmoid, and the reference-cache saving."""
    from lossforge.trainer.bench_train import bench_train as run_bench

    _print_json(run_bench(steps=steps, repeats=repeats))


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


def bench_scaling(
    as_json: bool = typer.Option(True, "--json/--no-json", help="Print the result as JSON (the default)."),
    k: str = typer.Option("1,2,4,8", "--k", help="Candidates in flight to compare, comma-separated (must include 1)."),
    cases: str = typer.Option("cpu,llm,ray", "--cases", help="Comma-separated: cpu, llm, ray."),
    cpu_evaluations: int = typer.Option(16, "--cpu-evaluations", min=1, help="Evaluated candidates per run of the cpu case."),
    llm_evaluations: int = typer.Option(16, "--llm-evaluations", min=1, help="Evaluated candidates per run of the llm case."),
    ray_evaluations: int = typer.Option(16, "--ray-evaluations", min=1, help="Evaluated candidates per run of the ray case."),
    llm_seconds: float = typer.Option(2.0, "--llm-seconds", min=0, help="Seconds the fake LLM server takes per answer."),
    proposer: str = typer.Option("evolution", "--proposer", help="The cpu and ray cases' proposer: evolution or random."),
    seed: int = typer.Option(0, "--seed", min=0),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="The ray case's cluster (default: a local Ray)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where the proxy world is cached."),
    out: Optional[Path] = typer.Option(None, "--out", help="Keep the runs' directories here (default: a temporary directory)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
) -> None:
    """Evaluated candidates per hour and the agent's own time against K in flight: CPU screens (threads per
    screen split or 1), a latency-bound LLM proposer (the fake server), and a local Ray cluster."""
    from pydantic import ValidationError

    from lossforge.bench.scaling import ScalingBenchConfig, run_scaling_bench

    try:
        settings = ScalingBenchConfig(
            ks=[int(x) for x in k.split(",") if x.strip()], cases=[x.strip() for x in cases.split(",") if x.strip()],
            cpu_evaluations=cpu_evaluations, llm_evaluations=llm_evaluations, ray_evaluations=ray_evaluations,
            llm_seconds=llm_seconds, proposer=proposer, seed=seed, ray_address=ray_address, cache_dir=cache_dir)
    except (ValidationError, ValueError) as error:
        _fail(f"bad bench scaling option: {error}")
    result = run_scaling_bench(settings, out, progress=None if quiet else (lambda m: err.print(f"[dim]{escape(m)}[/]")))
    if as_json:
        _print_json(result)
    else:
        for name, case in result["cases"].items():
            err.print(f"{name}: {case.get('best') or case.get('reason')}")
