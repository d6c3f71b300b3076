"""`lossforge import` and the `check` pointer to it, run as a user would (subprocesses, the real sandbox)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "candidate" / "fixtures"


def lossforge(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossforge.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_import_a_trl_dpo_loss_override_writes_a_checked_candidate(tmp_path) -> None:
    out = tmp_path / "dpo.py"
    done = lossforge("import", str(FIXTURES / "trl" / "dpo_loss_trl_0_8_6.py"), "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported MyDPOTrainer.dpo_loss as `dpo_loss`" in done.stdout and "PASS" in done.stdout
    assert "changed: returned the tuple (losses, chosen_rewards, rejected_rewards)" in done.stdout
    assert "self.loss_type = 'sigmoid' (TRL DPOConfig default)" in done.stdout
    checked = lossforge("check", str(out), "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["function_name"] == "dpo_loss"


def test_import_prints_the_candidate_when_no_output_is_given() -> None:
    done = lossforge("import", str(FIXTURES / "trl" / "dpo_loss_trl_0_13_0.py"), "--set", "loss_type=discopop")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('"""MyDPOTrainer.dpo_loss, imported by `lossforge import`')
    assert "def dpo_loss(policy_chosen_logps, policy_rejected_logps" in done.stdout
    assert "imported MyDPOTrainer.dpo_loss" in done.stderr
    # TRL's discopop has no clamp: beyond the range training reaches it is a warning, not a rejection
    assert "warning beyond the margins training reaches (|beta*margin| <= 50)" in done.stderr


def test_import_every_loss_of_a_discopop_form_trainer(tmp_path) -> None:
    trainer = FIXTURES / "discopop_form" / "trainer_methods.py"  # DiscoPOP's GPOTrainer form, written for the tests
    done = lossforge("import", str(trainer), "-o", str(tmp_path / "losses"), "--beta", "0.05", "--json")
    assert done.returncode == 1  # the two dispatchers are refused
    data = json.loads(done.stdout)
    assert len(data["imported"]) == 12 and all(item["check"]["passed"] for item in data["imported"])
    assert sorted(p.name for p in (tmp_path / "losses").iterdir()) == sorted(f"{i['name']}.py" for i in data["imported"])
    assert {r["name"] for r in data["refused"]} == {"DiscoveredLossTrainer.gpo_loss", "DiscoveredLossTrainer.dpo_loss"}
    several = lossforge("import", str(trainer))
    assert several.returncode == 2 and "holds 12 losses" in several.stderr and "--function NAME" in several.stderr


def test_import_refuses_compute_loss_with_the_reason() -> None:
    done = lossforge("import", str(FIXTURES / "trl" / "compute_loss_override.py"))
    assert done.returncode == 1
    assert "refused CustomTrainer.compute_loss" in done.stdout and "works on the model and the batch" in done.stdout


def test_import_usage_errors(tmp_path) -> None:
    done = lossforge("import", str(FIXTURES / "trl" / "dpo_loss_trl_0_8_6.py"), "--set", "loss_type")
    assert done.returncode == 2 and "expected NAME=VALUE" in done.stderr
    done = lossforge("import", str(tmp_path / "nope.py"))
    assert done.returncode == 2 and "is not a file" in done.stderr


def test_check_of_a_trainer_method_points_at_import() -> None:
    seeds = FIXTURES / "discopop_form" / "discovery_seeds.py"
    done = lossforge("check", str(seeds))
    assert done.returncode == 1
    assert "hint:" in done.stdout and f"lossforge import {seeds} -o OUT.py" in done.stdout.replace("\n", "")
    data = json.loads(lossforge("check", str(seeds), "--json").stdout)
    assert "lossforge import FILE -o OUT.py" in data["import_hint"]
