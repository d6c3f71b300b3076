"""The `lossforge` command line, run as a user would (subprocesses) on the tiny proxy."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lossforge.agent.runner import run_search
from lossforge.trainer.losses import LIBRARY, library_code
from tests.conftest import tiny_config_toml


def lossforge(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossforge.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


NAN_AT_LARGE_MARGINS = """
import torch

def explodes(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    return torch.exp(-2.0 * rho) * torch.sigmoid(rho)  # inf at rho = -50, within the range training reaches
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


# --- check --beta: a usage error outside (0, 10] ---------------------------------------------------------

@pytest.mark.parametrize("beta", ["0", "-0.1", "nan", "11"])
def test_check_refuses_a_beta_outside_0_10_as_a_usage_error(tmp_path, beta) -> None:
    path = tmp_path / "dpo.py"
    path.write_text(library_code("dpo"))
    done = lossforge("check", str(path), f"--beta={beta}", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--beta must be in (0, 10]" in done.stderr and "inverse temperature" in done.stderr
    assert done.stdout == ""  # no report: the loss is not blamed


def test_check_accepts_the_upper_end_of_beta(tmp_path) -> None:
    path = tmp_path / "dpo.py"
    path.write_text(library_code("dpo"))
    done = lossforge("check", str(path), "--beta", "10", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"]


# --- --help keeps every bracketed word ---------------------------------------------------------------------

BRACKETED = re.compile(r"\[[^\[\]]*\]")


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under a (typer-built) click command, with its path of names; groups included."""
    found = [(path, command)]
    if hasattr(command, "commands"):  # a group (typer ships its own click, so no isinstance check)
        for name, sub in sorted(command.commands.items()):
            found += _commands(sub, (*path, name))
    return found


def test_every_help_text_keeps_its_bracketed_words() -> None:
    """Rich markup read "[job]" or "[proxy.*]" as style tags and dropped them ("under ." for "under [job]")."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from lossforge.cli import app

    runner = CliRunner()
    checked: dict[str, list[str]] = {}
    for path, command in _commands(get_command(app)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        wanted = [m for text in texts for m in BRACKETED.findall(text)]
        done = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert done.exit_code == 0, (path, done.output)
        shown = "".join(done.output.split())  # wrapping may break a bracketed phrase across lines
        for phrase in wanted:
            assert "".join(phrase.split()) in shown, (path, phrase, done.output)
        checked[" ".join(path) or "lossforge"] = wanted
    assert {"run", "train", "mcp", "leaderboard", "bench proxy", "bench discovery", "check"} <= set(checked)
    assert "[job]" in checked["train"] and "[proxy.*]" in checked["mcp"] and "[proxy]" in checked["leaderboard"]
    assert sum(len(v) for v in checked.values()) >= 6


def test_train_help_as_a_user_sees_it() -> None:
    done = lossforge("train", "--help")
    assert done.returncode == 0 and "under [job]" in " ".join(done.stdout.split())


def test_error_messages_keep_bracketed_words(tmp_path) -> None:
    done = lossforge("run", "--run-dir", str(tmp_path / "run"), "--model", "m")
    assert done.returncode == 2 and "under [proposer]" in done.stderr


# --- the light dependencies: the README's tour right after ./scripts/setup.sh (no extras) ------------------

#: Modules only the extras bring (gpu, ray, slurm, docker, mcp); a base install has none of them.
EXTRAS_ONLY = ("trl", "accelerate", "datasets", "peft", "ray", "submitit", "docker", "mcp")


def lossforge_without(blocked: tuple[str, ...], *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`lossforge ARGS` in an interpreter where the `blocked` modules cannot be imported, as in an
    environment that never installed them (`sys.modules[name] = None`: import fails, find_spec says None)."""
    code = ("import sys\nfor name in %r:\n    sys.modules[name] = None\n"
            "sys.argv = ['lossforge', *sys.argv[1:]]\nfrom lossforge.cli import main\nmain()\n") % (blocked,)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_the_base_install_holds_the_tui_and_the_openai_client_and_keeps_gpu_ray_docker_as_extras() -> None:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    base = {Requirement(r).name for r in project["dependencies"]}
    assert {"openai", "textual", "textual-plotext"} <= base
    extras = project["optional-dependencies"]
    assert {Requirement(r).name for r in extras["gpu"]} >= {"trl", "accelerate", "datasets"}
    assert {Requirement(r).name for r in extras["ray"]} == {"ray"} and {Requirement(r).name for r in extras["docker"]} == {"docker"}
    assert not base & {"trl", "ray", "docker", "accelerate", "datasets", "mcp"}


def test_tui_loads_without_any_extra() -> None:
    done = lossforge_without(EXTRAS_ONLY, "tui", "--help")
    assert done.returncode == 0 and "--attach" in done.stdout, done.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import sys\nfor n in %r: sys.modules[n] = None\n"
         "from lossforge.tui.app import LossforgeApp\nfrom lossforge.llm.client import LLMClient\n"
         "LLMClient('http://127.0.0.1:9/v1', api_key_env=None)\nprint('ok')" % (EXTRAS_ONLY,)],
        capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "ok", imported.stderr[-3000:]


@pytest.mark.parametrize(("blocked", "args", "message"), [
    (("textual",), ("tui", "--attach", "."), "the TUI needs textual and textual-plotext, base dependencies"),
    (("mcp",), ("mcp",), "the MCP server needs the 'mcp' extra: ./scripts/setup.sh mcp"),
    (("trl",), ("train", "--loss", "x.py", "--config", "job.toml"), "training needs the 'gpu' extra"),
])
def test_a_missing_dependency_says_how_to_get_it(blocked, args, message) -> None:
    done = lossforge_without(blocked, *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


# --- run --proposer llm from flags alone -------------------------------------------------------------------

KEY_ENV = "LOSSFORGE_CLI_TEST_KEY"
KEY = "sk-cli-test-3141"


def _answer(name: str, code: str) -> dict:
    return {"text": json.dumps({"thought": "a smoother DPO", "name": name, "code": code})}


def test_run_with_an_llm_from_flags_alone(tmp_path, cache_dir) -> None:
    """`--proposer llm --model --base-url --api-key-env`: no [proposer.llm] anywhere (the TOML holds only the
    tiny proxy), in an interpreter without any extra, against the fake OpenAI server."""
    from lossforge.rundir.archive import Archive
    from lossforge.llm.fake_server import FakeServer
    from tests.support import SIGMOID_CODE

    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=1))
    assert "proposer" not in config.read_text()
    run_dir = tmp_path / "run"
    with FakeServer([_answer("smooth_sigmoid", SIGMOID_CODE), {"text": "Smoothing kept the KL low."}]) as server:
        url = server.base_url
        done = lossforge_without(
            EXTRAS_ONLY, "run", "--run-dir", str(run_dir), "--config", str(config), "--proposer", "llm",
            "--model", "fake-model", "--base-url", url, "--api-key-env", KEY_ENV, "--jsonl",
            env={**os.environ, KEY_ENV: KEY})
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.remaining() == 0
    requests = server.chat_requests
    assert requests and {r.body["model"] for r in requests} == {"fake-model"}
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in requests)
    saved = json.loads((run_dir / "config.json").read_text())["proposer"]
    assert saved["kind"] == "llm" and saved["llm"]["base_url"] == url
    assert saved["llm"]["api_key_env"] == KEY_ENV and [m["name"] for m in saved["llm"]["models"]] == ["fake-model"]
    archive = Archive(run_dir / "archive.sqlite", readonly=True)
    try:
        (only,) = archive.all()
        assert (only.name, only.status) == ("smooth_sigmoid", "evaluated") and only.fitness is not None
    finally:
        archive.close()
    assert KEY not in done.stdout + done.stderr


def test_run_model_flags_keep_a_configured_models_settings(tmp_path, cache_dir) -> None:
    """A --model the config already describes keeps its temperature, a new one gets the defaults; the config's
    other models are not used; --api-key-env '' is a server without a key."""
    from lossforge.llm.fake_server import FakeServer
    from tests.support import SIGMOID_CODE

    config = tmp_path / "llm.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=1) + (
        '\n[proposer.llm]\nmodels = [{name = "warm", temperature = 1.3}, {name = "unused"}]\n'))
    script = [_answer("smooth_sigmoid", SIGMOID_CODE), {"text": "Smoothing kept the KL low."}]
    with FakeServer(script, loop=True, models=("warm", "cold")) as server:
        done = lossforge("run", "--run-dir", str(tmp_path / "run"), "--config", str(config), "--proposer", "llm",
                         "--model", "warm", "--model", "cold", "--base-url", server.base_url, "--api-key-env", "",
                         env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["proposer"]["llm"]
    assert [(m["name"], m["temperature"]) for m in saved["models"]] == [("warm", 1.3), ("cold", 0.8)]
    assert saved["api_key_env"] == ""
    assert server.chat_requests and {r.body["model"] for r in server.chat_requests} <= {"warm", "cold"}
    assert all("authorization" not in r.headers or r.headers["authorization"] == "Bearer not-needed" for r in server.chat_requests)


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "m"), "add --proposer llm"),
    (("--proposer", "evolution", "--base-url", "http://127.0.0.1:9/v1"), "add --proposer llm"),
    (("--proposer", "llm", "--api-key-env", "LOSSFORGE_NO_SUCH_KEY_VAR"),
     "environment variable LOSSFORGE_NO_SUCH_KEY_VAR, which is not set"),
])
def test_run_llm_flags_refuse_what_cannot_work_before_anything_runs(tmp_path, args, message) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOSSFORGE_NO_SUCH_KEY_VAR"}
    done = subprocess.run([sys.executable, "-m", "lossforge.cli", "run", "--run-dir", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_run_concurrency_below_1_is_a_usage_error(tmp_path, value) -> None:
    done = lossforge("run", "--run-dir", str(tmp_path / "run"), "--concurrency", value, timeout=120)
    assert done.returncode == 2 and "--concurrency" in done.stderr and "at least 1" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_run_concurrency_overrides_the_config_and_status_shows_nothing_left_in_flight(tmp_path, cache_dir) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config_toml(cache_dir, generations=2, extra='concurrency = 1\n[proposer]\nkind = "random"\n'))
    run_dir = tmp_path / "run"
    done = lossforge("run", "--run-dir", str(run_dir), "--config", str(config), "--concurrency", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "config.json").read_text())["search"]["concurrency"] == 2
    status = json.loads(lossforge("status", str(run_dir), "--json").stdout)
    assert status["evaluated"] == 2 and status["in_flight"] == []
    text = lossforge("status", str(run_dir))
    assert text.returncode == 0 and "in flight: none" in text.stdout


def test_status_shows_the_candidates_in_flight_and_their_stages(tmp_path) -> None:
    """An archive as a run with three walks in flight and a background training job leaves it (written by
    hand: the supervisor's meta, the rows at their stages); status reads it like a live run's."""
    from lossforge.rundir.archive import Archive
    from lossforge.rundir.in_flight import IN_FLIGHT_META

    archive = Archive(tmp_path / "archive.sqlite")
    screening = archive.upsert_proposal(0, name="on_the_proxy", code="x", code_hash="a")
    archive.update(screening, status="screening")
    trained = archive.upsert_proposal(1, name="promoted", code="y", code_hash="b")
    archive.update(trained, status="evaluated", fitness=1.0, generation=1, reflection="ok",
                   result={"train": {"status": "running", "job_id": "job-1"}})
    checking = archive.upsert_proposal(3, name="being_checked", code="z", code_hash="c")
    archive.set_meta(IN_FLIGHT_META, [0, 2, 3])
    archive.close()

    done = lossforge("status", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    shown = [(f["slot"], f["candidate_id"], f["stage"]) for f in json.loads(done.stdout)["in_flight"]]
    assert shown == [(0, screening, "screening"), (2, None, "proposing"), (3, checking, "checking"), (None, trained, "training")]
    text = lossforge("status", str(tmp_path)).stdout
    assert "in flight: 4" in text and "proposing" in text and "training (job job-1: running)" in text
