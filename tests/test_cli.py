"""The `lossforge` command line, run as a user would (subprocesses) on the tiny proxy."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossforge.agent.runner import run_search
from lossforge.trainer.losses import LIBRARY, library_code
from tests.conftest import tiny_config_toml


def lossforge(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossforge.cli", *args], capture_output=True, text=True, timeout=timeout)


NAN_AT_LARGE_MARGINS = """
import torch

def explodes(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    return torch.exp(-rho) * torch.sigmoid(rho)
"""


def test_check_passes_a_library_loss(tmp_path) -> None:
    path = tmp_path / "dpo.py"
    path.write_text(library_code("dpo"))
    done = lossforge("check", str(path), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["function_name"] == "dpo_loss" and report["fingerprint"]


def test_check_rejects_a_broken_loss_naming_the_check(tmp_path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(NAN_AT_LARGE_MARGINS)
    done = lossforge("check", str(path), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert failed[0]["name"] == "extreme_margins" and failed[0]["evidence"]


def test_check_of_a_missing_file_is_a_usage_error(tmp_path) -> None:
    done = lossforge("check", str(tmp_path / "nope.py"))
    assert done.returncode == 2 and "is not a file" in done.stderr


def test_a_bad_config_is_refused_before_anything_runs(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[search]\ngeneratoins = 5\nseed = 'zero'\n")
    done = lossforge("run", "--run-dir", str(tmp_path / "run"), "--config", str(config))
    assert done.returncode == 2
    assert "unknown key 'search.generatoins'" in done.stderr and "search.seed" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_proxy, cache_dir) -> Path:
    from lossforge.config import RunConfig

    run_dir = tmp_path_factory.mktemp("run")
    config = RunConfig.model_validate({"proxy": tiny_proxy.model_dump(), "cache_dir": str(cache_dir), "search": {"generations": 4}})
    run_search(run_dir, config)
    return run_dir


def test_status_lists_candidates_with_fitness(finished_run) -> None:
    done = lossforge("status", str(finished_run), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["evaluated"] == 4
    evaluated = [c for c in data["candidates"] if c["status"] == "evaluated"]
    assert len(evaluated) == 4 and all(isinstance(c["fitness"], float) for c in evaluated)
    assert data["best"]["fitness"] == max(c["fitness"] for c in evaluated)


def test_status_of_a_directory_without_a_run_says_so(tmp_path) -> None:
    done = lossforge("status", str(tmp_path), "--json")
    assert done.returncode == 2 and "run directory" in done.stderr


def test_export_writes_an_importable_module_that_computes_the_loss(finished_run, tmp_path) -> None:
    status = json.loads(lossforge("status", str(finished_run), "--json").stdout)
    best = status["best"]
    out = tmp_path / "best_loss.py"
    done = lossforge("export", str(finished_run), str(best["id"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    spec = importlib.util.spec_from_file_location("best_loss", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = [v for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", None) == "best_loss"]
    assert len(functions) == 1
    x = [torch.randn(5) for _ in range(4)]
    assert functions[0](*x, 0.1).shape == (5,)
    assert f"Candidate id: {best['id']}" in out.read_text()


def test_export_of_an_unknown_id_is_a_usage_error(finished_run) -> None:
    done = lossforge("export", str(finished_run), "999")
    assert done.returncode == 2 and "no candidate with id 999" in done.stderr


def test_report_writes_markdown_and_plots(finished_run) -> None:
    done = lossforge("report", str(finished_run))
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    names = {Path(p).name for p in paths["plots"]}
    assert names == {"best_fitness.png", "loss_shapes.png", "reward_vs_kl.png", "frontier.png", "funnel.png", "costs.png"}
    for p in paths["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = Path(paths["markdown"]).read_text()
    assert "## Top candidates" in text and "Not plotted" not in text and "Not screened" not in text
    assert Path(paths["html"]).read_text().count('<img src="data:image/png;base64,') == 6


def test_leaderboard_ranks_dpo_above_the_reference_and_anti_dpo_below(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir))
    done = lossforge("leaderboard", "--seeds", "2", "--losses", "dpo,ipo", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["rows"]}
    assert set(rows) == {"dpo", "ipo", "anti_dpo", "reference"}
    assert rows["dpo"]["n"] == 2 and rows["dpo"]["stderr"] is not None
    assert rows["dpo"]["mean"] > 0 > rows["anti_dpo"]["mean"]


def test_leaderboard_refuses_unknown_losses() -> None:
    done = lossforge("leaderboard", "--losses", "dpo,nonsense")
    assert done.returncode == 2 and "nonsense" in done.stderr and "dpo" in done.stderr


def test_bench_proxy_prints_json(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir))
    done = lossforge("bench", "proxy", "--repeats", "1", "--config", str(config))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["candidate_seconds"] > 0 and data["deterministic"] and set(LIBRARY) >= {data["loss"]}
