"""Launchers: the local subprocess queue end to end (dedup, timeout kill, failure tail); Slurm when present.

Ray has its own module, test_ray_launcher.py (a local Ray instance)."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")

from lossforge.trainer.launchers import JobStatus, LocalLauncher, TrainJob, job_key  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402
from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model  # noqa: E402
from lossforge.trainer.job_config import JobConfig  # noqa: E402

RAISES_IN_TRAINING = '''import torch
import torch.nn.functional as F


def late_nan(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    if policy_chosen_logps.shape[0] == 5:
        return rho * float("nan")
    return F.softplus(-rho)
'''  # passes the checks (they never use batch 5), NaN in training

SHAPE_FAIL = '''import torch

def summed(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return (policy_chosen_logps - policy_rejected_logps).sum()
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-launch")
    return write_tiny_model(root / "model"), write_preference_jsonl(root / "prefs.jsonl", 32)


def _job(tiny, tmp_path, code=None, sleep=0.0, limit=120.0, **kw) -> TrainJob:
    kw.setdefault("batch_size", 4)
    cfg = JobConfig(model=str(tiny[0]), dataset=str(tiny[1]), max_steps=2, learning_rate=1e-3,
                    precision="fp32", seed=0, eval_fraction=0.25, save_model=False,
                    ref_cache_dir=str(tmp_path / "refcache"), **kw)
    return TrainJob(config=cfg, loss_code=code or library_code("dpo"), time_limit_s=limit, debug_sleep_s=sleep)


def test_local_launcher_runs_dedups_kills_and_reports(tiny, tmp_path):
    root = tmp_path / "jobs"
    launcher = LocalLauncher(root, gpus=[], max_concurrent=2, poll_s=0.1, kill_grace_s=1.0)
    assert launcher.max_concurrent == 2 and LocalLauncher(tmp_path / "x", gpus=[]).max_concurrent == 1
    ok_a = launcher.submit(_job(tiny, tmp_path))
    ok_b = launcher.submit(_job(tiny, tmp_path, code=library_code("ipo")))
    hung = launcher.submit(_job(tiny, tmp_path, sleep=600.0, limit=3.0))
    failing = launcher.submit(_job(tiny, tmp_path, code=SHAPE_FAIL))
    assert len({ok_a.key, ok_b.key, hung.key, failing.key}) == 4

    again = launcher.submit(_job(tiny, tmp_path))  # the same job: the same handle, nothing new runs
    assert again.key == ok_a.key and again.reused and again.job_dir == ok_a.job_dir

    ra, rb = launcher.result(ok_a, timeout=120), launcher.result(ok_b, timeout=120)
    assert ra.ok and rb.ok, (ra.error, rb.error)
    assert 0.0 <= ra.eval_accuracy <= 1.0 and ra.eval_pairs == 8 and ra.steps == 2
    assert launcher.status(ok_a) is JobStatus.SUCCEEDED

    t0 = time.monotonic()
    rh = launcher.result(hung, timeout=60)
    assert launcher.status(hung) is JobStatus.TIMEOUT and not rh.ok
    assert "time limit" in rh.error and "debug: sleeping" in rh.error
    assert time.monotonic() - t0 < 30

    rf = launcher.result(failing, timeout=120)
    assert launcher.status(failing) is JobStatus.FAILED and not rf.ok
    assert "exited with code 1" in rf.error and "failed the checks" in rf.error and "stderr" in rf.error

    # A new launcher on the same root (a restarted process): the finished job is found, not rerun.
    reborn = LocalLauncher(root, gpus=[], poll_s=0.1)
    h = reborn.submit(_job(tiny, tmp_path))
    assert h.reused and reborn.status(h) is JobStatus.SUCCEEDED
    assert reborn.result(h).eval_accuracy == ra.eval_accuracy
    assert "job ok" in reborn.logs(h)
    assert job_key(_job(tiny, tmp_path)) == ok_a.key


def test_local_launcher_reports_an_error_raised_in_training(tiny, tmp_path):
    launcher = LocalLauncher(tmp_path / "jobs", gpus=[], poll_s=0.1)
    h = launcher.submit(_job(tiny, tmp_path, code=RAISES_IN_TRAINING, batch_size=5))
    r = launcher.result(h, timeout=120)
    assert not r.ok and "DegenerateLossError" in r.error and "not finite" in r.error


def test_local_launcher_cancel_and_gpu_assignment(tiny, tmp_path):
    launcher = LocalLauncher(tmp_path / "jobs", gpus=["3"], poll_s=0.1, kill_grace_s=0.5)
    assert launcher.max_concurrent == 1
    first = launcher.submit(_job(tiny, tmp_path, sleep=600.0, limit=600.0))
    queued = launcher.submit(_job(tiny, tmp_path, sleep=599.0, limit=600.0))
    assert launcher.status(first) is JobStatus.RUNNING and launcher.status(queued) is JobStatus.QUEUED
    state = (Path(first.job_dir) / "state.json").read_text()
    assert '"gpu": "3"' in state
    launcher.cancel(queued)
    launcher.cancel(first)
    assert launcher.status(first) is JobStatus.CANCELLED and launcher.status(queued) is JobStatus.CANCELLED


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit is not installed (optional: pip install submitit)")
def test_slurm_launcher_parameters_with_local_executor(tiny, tmp_path):  # pragma: no cover - needs submitit
    from lossforge.trainer.launchers import SlurmLauncher

    launcher = SlurmLauncher(tmp_path / "slurm", partition="gpu", gpus_per_node=1, cluster="local")
    job = _job(tiny, tmp_path, limit=90.0)
    params = launcher.slurm_parameters(job)
    assert params["timeout_min"] == 3 and params["gpus_per_node"] == 1 and params["slurm_partition"] == "gpu"
    assert params["name"] == f"lossforge-{job_key(job)}"
    h = launcher.submit(job)
    assert launcher.submit(job).reused
    assert launcher.result(h).ok


def test_slurm_parameters_without_submitit(tiny, tmp_path):
    from lossforge.trainer.launchers import SlurmLauncher

    params = SlurmLauncher(tmp_path, partition="a100", cpus_per_task=4).slurm_parameters(_job(tiny, tmp_path, limit=3600))
    assert params == {"name": params["name"], "timeout_min": 61, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
                      "cpus_per_task": 4, "mem_gb": 64, "slurm_partition": "a100"}
