"""`lossforge bench discovery` on a tiny proxy: real searches, library bar, held-out, determinism."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.bench.discovery import (
    DiscoveryBenchConfig,
    deterministic_view,
    funnel_fractions,
    load_bench_config,
    run_discovery_bench,
)
from lossforge.config import ConfigError
from lossforge.trainer.proxy.heldout import HeldOutConfig, HeldOutCondition, stat, total_label_noise
from tests.conftest import TINY_SCREEN, TINY_WORLD

pytestmark = pytest.mark.slow


def _tiny(cache_dir: Path) -> DiscoveryBenchConfig:
    return load_bench_config(
        None,
        {
            "seeds": [0, 1],
            "evaluations": 4,
            "jobs": 2,
            "library": ["dpo", "ipo", "discopop"],
            "run": {"cache_dir": str(cache_dir), "proxy": {"world": TINY_WORLD, "screen": {**TINY_SCREEN, "steps": 6}}},
            "heldout": {
                "seeds": [70],
                "eval_samples": None,
                "conditions": [{"name": "search settings"}, {"name": "beta 0.3", "screen": {"beta": 0.3}}],
            },
        },
    )


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory, cache_dir):
    config = _tiny(cache_dir)
    first = run_discovery_bench(config, tmp_path_factory.mktemp("bench-a"))
    second = run_discovery_bench(config, tmp_path_factory.mktemp("bench-b"))
    return config, first, second


def test_the_bench_compares_proposers_with_curves_funnels_and_timings(bench_runs) -> None:
    config, result, _ = bench_runs
    assert set(result["proposers"]) == {"evolution", "random"}
    assert "llm" in result["settings"]["skipped"]
    for kind, entry in result["proposers"].items():
        rows = entry["best_so_far"]["by_evaluations"]
        assert [r["evaluations"] for r in rows] == [1, 2, 3, 4]
        means = [r["mean"] for r in rows if r["mean"] is not None]
        assert means == sorted(means)  # best-so-far never decreases
        funnel = entry["funnel"]
        assert funnel["evaluated"] + funnel["degenerate"] == 8  # 2 seeds x 4
        assert funnel["proposed"] >= 8
        assert entry["timing"]["screen_per_evaluated"] > 0
        assert entry["timing"]["orchestration_per_evaluated"] is not None
        assert entry["best_discovered"]["vs_dpo"]["overall"]["n"] == 1
    assert result["library"]["ranking"][0]["n"] == 2
    assert {"dpo", "discopop"} <= set(result["heldout"])
    assert result["comparisons"]["evolution_minus_random"]["search_best_at_budget"]["n"] == 2
    assert set(result["heldout"]["dpo"]["by_condition"]) == {"search settings", "beta 0.3"}


def test_the_bench_is_deterministic_for_given_seeds(bench_runs) -> None:
    _, first, second = bench_runs
    assert json.dumps(deterministic_view(first), sort_keys=True) == json.dumps(deterministic_view(second), sort_keys=True)


def test_held_out_seeds_must_never_be_search_seeds() -> None:
    with pytest.raises(ValueError, match="held-out seeds \\[3\\] are also search seeds"):
        DiscoveryBenchConfig(seeds=[1, 2, 3], heldout=HeldOutConfig(seeds=[3, 9]))
    with pytest.raises(ConfigError):
        load_bench_config(None, {"evaluations": 0})
    with pytest.raises(ValueError, match="unknown screen fields"):
        HeldOutCondition(name="x", screen={"betta": 0.2})


def test_a_held_out_condition_the_search_reads_is_refused() -> None:
    # The bench's search reads beta 0.05 and 0.1 (BENCH_FITNESS); a held-out beta 0.1 would not be held out.
    leak = HeldOutConfig(conditions=[HeldOutCondition(name="beta 0.1", screen={"beta": 0.1})])
    with pytest.raises(ValueError, match="'beta 0.1' is one of the search's \\[proxy.fitness\\] variants"):
        DiscoveryBenchConfig(heldout=leak)
    config = DiscoveryBenchConfig()  # the documented bench: held-out betas 0.025 and 0.2, never searched
    assert [s.beta for s in config.run.proxy.fitness.settings(config.run.proxy.screen)] == [0.05, 0.1]


def test_a_partial_bench_config_keeps_the_bench_world(tmp_path) -> None:
    path = tmp_path / "bench.toml"
    path.write_text("seeds = [5]\n[run.proxy.screen]\nsteps = 8\n")
    config = load_bench_config(path)
    # the override applies, and the bench's own screen settings (not the defaults) are kept around it
    assert config.run.proxy.screen.steps == 8
    assert (config.run.proxy.screen.checkpoints, config.run.proxy.screen.eval_samples, config.run.proxy.screen.threads) == (6, 256, 1)
    assert config.run.proxy.screen.lr == 1.5e-4  # the bench walks the frontier 1.5x faster (read at a matched KL)
    assert config.run.proxy.world.train_pairs == 1024  # the bench world, not the default one


def test_statistics_and_label_noise() -> None:
    s = stat([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.n == 3 and s.stderr == pytest.approx(1 / 3**0.5)
    assert stat([]).n == 0 and stat([1.0]).stderr is None
    assert total_label_noise(0.1, 0.1875) == pytest.approx(0.25)
    fractions = funnel_fractions(
        {"proposed": 10, "failed_proposal": 0, "rejected": 4, "duplicate": 3, "screened": 3, "failed_screen": 0, "degenerate": 1, "evaluated": 2}
    )
    assert fractions["rejected_by_checks"] == 0.4 and fractions["duplicates_of_passed"] == 0.5


def test_the_llm_proposer_reports_tokens_and_dollars_per_evaluated_candidate(tmp_path, cache_dir, monkeypatch) -> None:
    from lossforge.llm.fake_server import FakeServer
    from lossforge.trainer.losses import library_code

    monkeypatch.setenv("LOSSFORGE_BENCH_KEY", "sk-bench-test")
    cost = {"prompt_tokens": 1000, "completion_tokens": 100}

    def proposal(name: str) -> dict:
        return {"match": "This is proposal", "text": json.dumps({"thought": "t", "name": name, "code": library_code(name)}), **cost}

    reflection = {"match": "Your reflection", "text": "Noted.", **cost}
    script = [proposal("ipo"), reflection, proposal("slic"), reflection]
    with FakeServer(script) as server:
        config = load_bench_config(
            None,
            {
                **_tiny(cache_dir).model_dump(mode="json"),
                "seeds": [0],
                "evaluations": 2,
                "proposers": ["llm"],
                "library": ["dpo"],
                "heldout": {"seeds": [70], "eval_samples": None, "conditions": [{"name": "search settings"}]},
            },
        )
        config.run.proposer.llm = config.run.proposer.llm.model_validate(
            {
                "base_url": server.base_url, "api_key_env": "LOSSFORGE_BENCH_KEY", "max_retries": 1, "timeout": 20,
                "models": [{"name": "fake-model", "temperature": 0.5}],
                "prices": {"models": {"fake-model": {"input": 10.0, "output": 20.0}}},
            }
        )
        result = run_discovery_bench(config, tmp_path / "bench")
    llm = result["proposers"]["llm"]["llm"]
    assert llm["tokens_per_evaluated"] == 2200  # (proposal + reflection) x 1,100 tokens per evaluated candidate
    assert llm["usd_per_evaluated"] == pytest.approx(2 * (1000 * 10 + 100 * 20) / 1e6)
    assert "llm" not in result["settings"]["skipped"]


def test_the_cli_refuses_bad_bench_settings_with_a_usage_error(tmp_path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lossforge.cli", "bench", "discovery", "--out", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120)

    done = cli("--proposers", "evolution,genetic")
    assert done.returncode == 2 and "genetic" in done.stderr
    done = cli("--seeds", "1000")
    assert done.returncode == 2 and "held-out seeds [1000] are also search seeds" in done.stderr
    assert not (tmp_path / "discovery.json").exists()
