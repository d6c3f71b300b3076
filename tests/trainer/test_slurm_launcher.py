"""SlurmLauncher for real through submitit's local executor (its pickling and job folders, a local subprocess):
the tiny model trained on CPU, dedup across launcher instances while the job runs, the result, a failing job's
stderr tail, a hung job killed at its time limit and one cancelled; and the sbatch script the Slurm executor
would write (no Slurm here: submitit's srun check is patched, nothing is submitted)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
submitit = pytest.importorskip("submitit", reason="submitit is not installed (optional: pip install 'lossforge[slurm]')")

from lossforge.trainer.launchers import JobStatus, LauncherSettings, SlurmLauncher, TrainJob, job_key, make_launcher  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402
from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model  # noqa: E402
from lossforge.trainer.job_config import JobConfig  # noqa: E402

SHAPE_FAIL = '''import torch

def summed(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return (policy_chosen_logps - policy_rejected_logps).sum()
'''


def _job(tmp_path: Path, code: str | None = None, sleep: float = 0.0, limit: float = 120.0) -> TrainJob:
    if not (tmp_path / "model").exists():
        write_tiny_model(tmp_path / "model")
        write_preference_jsonl(tmp_path / "prefs.jsonl", 24)
    cfg = JobConfig(model=str(tmp_path / "model"), dataset=str(tmp_path / "prefs.jsonl"), max_steps=2, batch_size=4,
                    learning_rate=1e-3, precision="fp32", seed=0, eval_fraction=0.25, save_model=False,
                    ref_cache_dir=str(tmp_path / "refcache"))
    return TrainJob(config=cfg, loss_code=code or library_code("dpo"), time_limit_s=limit, debug_sleep_s=sleep)


def test_slurm_launcher_runs_jobs_through_submitits_local_executor(tmp_path: Path) -> None:
    root = tmp_path / "slurm-jobs"
    launcher = make_launcher(LauncherSettings(kind="slurm", slurm_cluster="local", slurm_gpus_per_node=0,
                                              slurm_cpus_per_task=1, slurm_mem_gb=1, poll_s=0.2), root)
    assert isinstance(launcher, SlurmLauncher) and launcher.cluster == "local"
    job, bad = _job(tmp_path), _job(tmp_path, code=SHAPE_FAIL)
    hung, cancelled = _job(tmp_path, sleep=600.0, limit=5.0), _job(tmp_path, sleep=599.0, limit=600.0)

    handle = launcher.submit(job)
    assert handle.key == job_key(job) and handle.backend == "slurm" and not handle.reused and handle.backend_id
    meta = json.loads((root / handle.key / "submitit.json").read_text())
    assert meta["job_id"] == handle.backend_id and meta["cluster"] == "local"
    assert list((root / handle.key / "submitit").glob("*_submitted.pkl"))  # submitit's own job folder
    failing, timed, stopped = launcher.submit(bad), launcher.submit(hung), launcher.submit(cancelled)

    again = launcher.submit(job)
    assert again.reused and again.key == handle.key and again.backend_id == handle.backend_id
    # A second launcher (a restarted process) on the same root, while the job may still run: the same job.
    other = SlurmLauncher(root, cluster="local", gpus_per_node=0, poll_s=0.2)
    found = other.submit(job)
    assert found.reused and found.backend_id == handle.backend_id
    assert other.status(found) in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)

    result = launcher.result(handle, timeout=150)
    assert result.ok, result.error
    assert result.steps == 2 and result.eval_pairs == 6 and 0.0 <= result.eval_accuracy <= 1.0
    assert launcher.status(handle) is JobStatus.SUCCEEDED
    assert json.loads((root / handle.key / "progress.json").read_text())["phase"] == "done"
    assert other.result(found, timeout=60).eval_accuracy == result.eval_accuracy  # followed by job id, not rerun
    assert "job ok" in other.logs(found)

    launcher.cancel(stopped)
    assert launcher.status(stopped) is JobStatus.CANCELLED and other.status(stopped) is JobStatus.CANCELLED
    rc = launcher.result(stopped)
    assert not rc.ok and "cancelled" in rc.error and "debug: sleeping" in rc.error

    rf = launcher.result(failing, timeout=150)
    assert launcher.status(failing) is JobStatus.FAILED and not rf.ok
    assert "exited with code 1" in rf.error and "failed the checks" in rf.error and "stderr (tail)" in rf.error

    rt = launcher.result(timed, timeout=150)
    assert launcher.status(timed) is JobStatus.TIMEOUT and not rt.ok
    assert "killed at its time limit (5s)" in rt.error and "stderr (tail)" in rt.error

    # A failed job is returned as it is, unless retried.
    assert launcher.submit(bad).reused and launcher.status(failing) is JobStatus.FAILED
    # Nothing of the killed jobs is left running (the body killed job_main's whole session).
    for h in (timed, stopped):
        pid = json.loads((root / h.key / "started.json").read_text())["pid"]
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def test_sbatch_parameters_of_the_slurm_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, limit=3600.0)
    launcher = SlurmLauncher(tmp_path / "jobs", partition="gpu", gpus_per_node=2, cpus_per_task=6, mem_gb=48,
                             account="proj42", qos="high", extra={"slurm_constraint": "a100"})
    with pytest.raises(RuntimeError, match="slurm_cluster"):  # no srun on this machine
        launcher.submit(job)
    assert not (tmp_path / "jobs" / job_key(job) / "submitit.json").exists()  # the failed claim is released

    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists
    executor = launcher.make_executor(job)
    assert executor.cluster == "slurm"
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["account"] == "proj42" and params["qos"] == "high"
    assert params["gpus_per_node"] == 2 and params["cpus_per_task"] == 6 and params["time"] == 61
    assert params["constraint"] == "a100" and params["job_name"] == f"lossforge-{job_key(job)}"
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    for flag in ("--partition=gpu", "--account=proj42", "--qos=high", "--gpus-per-node=2", "--cpus-per-task=6",
                 "--mem=48GB", "--time=61", "--nodes=1", "--ntasks-per-node=1", "--constraint=a100",
                 f"--job-name=lossforge-{job_key(job)}", "--signal=USR2@30"):
        assert f"#SBATCH {flag}" in sbatch, (flag, sbatch)


def test_slurm_launcher_settings(tmp_path: Path) -> None:
    settings = LauncherSettings.model_validate({"kind": "slurm", "slurm_partition": "a100", "slurm_account": "p",
                                                "slurm_qos": "q", "slurm_extra": {"slurm_constraint": "h100"}})
    assert settings.slurm_cluster == "slurm"
    launcher = make_launcher(settings, tmp_path)
    assert (launcher.cluster, launcher.partition, launcher.account, launcher.qos) == ("slurm", "a100", "p", "q")
    assert launcher.extra == {"slurm_constraint": "h100"}
    with pytest.raises(ValueError):
        LauncherSettings.model_validate({"kind": "slurm", "slurm_cluster": "debug"})


def test_a_claim_whose_submission_died_ends_failed(tmp_path: Path) -> None:
    import os

    launcher = SlurmLauncher(tmp_path / "jobs", cluster="local")
    job = _job(tmp_path)
    claim = tmp_path / "jobs" / job_key(job) / "submitit.json"
    claim.parent.mkdir(parents=True)
    claim.touch()  # another launcher is submitting this key: it is not submitted twice
    handle = launcher.submit(job)
    assert handle.reused and launcher.status(handle) is JobStatus.QUEUED
    os.utime(claim, (1.0, 1.0))  # ...and died doing it long ago
    assert launcher.status(handle) is JobStatus.FAILED
    assert "never completed" in launcher.result(handle).error
