"""`lossforge bench scaling` at tiny sizes: real searches (real sandbox, the fake OpenAI server on
127.0.0.1), checking the report's structure and that its counts add
up. No speed is asserted (the numbers come from running the bench, see docs/BENCHMARKS.md).
"""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from lossforge.bench.scaling import ScalingBenchConfig, llm_script, run_scaling_bench
from lossforge.cli import app
from lossforge.rundir.archive import Archive

pytestmark = pytest.mark.slow

RUN_KEYS = {"k", "threads", "evaluated", "proposals", "counts", "stop_reason", "wall_s", "candidates_per_hour",
            "speedup_vs_k1", "agent_s", "work_s", "agent_over_work", "unattributed_s"}
SCORED = {"evaluated", "degenerate"}


def _check_runs(case: dict, ks: list[int], evaluations: int) -> None:
    runs = case["runs"]
    assert sorted({r["k"] for r in runs}) == ks
    for run in runs:
        assert RUN_KEYS <= set(run)
        assert run["evaluated"] == evaluations and run["stop_reason"] == "generations"
        assert sum(run["counts"].values()) == run["proposals"] >= run["evaluated"]
        assert sum(v for s, v in run["counts"].items() if s in SCORED) == run["evaluated"]
        assert math.isclose(run["candidates_per_hour"], 3600 * run["evaluated"] / run["wall_s"], rel_tol=1e-3)
        assert run["work_s"] > 0 and 0 <= run["agent_s"] < run["wall_s"]
        assert math.isclose(run["agent_over_work"], run["agent_s"] / run["work_s"], rel_tol=1e-2, abs_tol=1e-4)
        assert (run["unattributed_s"] is None) == (run["k"] != 1)
    best_k1 = max(r["candidates_per_hour"] for r in runs if r["k"] == 1)
    for run in runs:
        assert math.isclose(run["speedup_vs_k1"], run["candidates_per_hour"] / best_k1, rel_tol=1e-2, abs_tol=5e-4)  # 3 decimals
    best = max(runs, key=lambda r: r["candidates_per_hour"])
    assert case["best"] == {"k": best["k"], "threads": best["threads"], "candidates_per_hour": best["candidates_per_hour"]}
    assert [b["k"] for b in case["agent_share_bars"]] == [1]  # K = 8 is not run here
    assert case["agent_share_bars"][0]["met"] == (case["agent_share_bars"][0]["measured"] <= 0.02)


def test_the_bench_at_tiny_sizes(tmp_path, cache_dir) -> None:
    # The ray case runs the same search with executor = "ray" (tests/agent/test_ray_search.py runs that on a
    # real cluster); left out here to keep the suite's time.
    settings = ScalingBenchConfig(ks=[2, 1], cases=["llm", "cpu"], cpu_evaluations=1, llm_evaluations=2,
                                  llm_seconds=0.2, proposer="random", seed=1, cache_dir=cache_dir)
    result = run_scaling_bench(settings, tmp_path / "runs")
    json.dumps(result)  # plain JSON
    assert list(result) == ["bench", "settings", "machine", "seconds", "cases"]
    assert result["settings"]["ks"] == [1, 2] and result["machine"]["cores"] >= 1
    assert {"load_average_before", "load_average_after"} <= set(result["machine"])
    assert list(result["cases"]) == ["cpu", "llm"]  # in the bench's order, whatever order they were asked in

    cpu = result["cases"]["cpu"]
    assert cpu["status"] == "ok" and cpu["executor"] == "local"
    _check_runs(cpu, [1, 2], 1)
    cores = result["machine"]["cores"]
    for k in (1, 2):  # each K with threads max(1, cores // K) and 1: each rule once, one run per distinct setting
        rows = [r for r in cpu["runs"] if r["k"] == k]
        assert sorted(rule for r in rows for rule in r["threads_rules"]) == ["one", "split"]
        assert {r["threads"] for r in rows} == {max(1, cores // k), 1} and len(rows) == len({r["threads"] for r in rows})
    for run in cpu["runs"]:  # the run directories hold what the report says
        archive = Archive(tmp_path / "runs" / f"local-k{run['k']}-t{run['threads']}" / "archive.sqlite", readonly=True)
        assert archive.count_evaluated() == run["evaluated"] and len(archive.all()) == run["proposals"]
        archive.close()

    llm = result["cases"]["llm"]
    assert llm["status"] == "ok" and llm["llm_seconds"] == 0.2
    _check_runs(llm, [1, 2], 2)
    for run in llm["runs"]:  # one proposal and one reflection per candidate, all distinct and valid
        assert run["counts"] == {"evaluated": 2} and run["llm_requests"] == 4
        assert 1 <= run["llm_max_in_flight"] <= run["k"]
    assert llm["speedup_bar"] == {"k": 4, "min_speedup": 3.2, "measured": None, "met": None}



def test_the_llm_script_holds_distinct_valid_losses() -> None:
    from lossforge.candidate.checks import run_checks

    steps = llm_script(6, 0.0)
    proposals = [json.loads(s["text"]) for s in steps if "proposal" in s["match"]]
    assert len(proposals) == 6 and len({p["name"] for p in proposals}) == 6 and len({p["code"] for p in proposals}) == 6
    for proposal in proposals:
        report = run_checks(proposal["code"], 0.05)
        assert report.passed, (proposal["name"], report.failed_check)


def test_the_command_prints_json_and_refuses_bad_options(cache_dir) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["bench", "scaling", "--k", "1", "--cases", "llm", "--llm-evaluations", "1",
                               "--llm-seconds", "0", "--cache-dir", str(cache_dir), "--quiet"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert list(result["cases"]) == ["llm"] and result["cases"]["llm"]["runs"][0]["evaluated"] == 1
    bad = runner.invoke(app, ["bench", "scaling", "--k", "2,4"])
    assert bad.exit_code == 2 and "must include 1" in bad.output
