"""RayLauncher for real: a local Ray instance (2 CPUs, no dashboard) trains the tiny model on CPU; dedup in
process and across launchers, the result, a failing job's stderr tail, and the tools on top of Ray."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
ray = pytest.importorskip("ray", reason="ray is not installed (optional: pip install 'lossforge[ray]')")

from lossforge.sandbox.protocol import InProcessSandbox  # noqa: E402
from lossforge.tools import api  # noqa: E402
from lossforge.tools.context import ToolContext, ToolSettings  # noqa: E402
from lossforge.trainer.launchers import JobStatus, LauncherSettings, RayLauncher, TrainJob, job_key, make_launcher  # noqa: E402
from lossforge.trainer.losses import library_code  # noqa: E402
from lossforge.trainer.tiny_fixture import write_preference_jsonl, write_tiny_model  # noqa: E402
from lossforge.trainer.job_config import JobConfig  # noqa: E402

SHAPE_FAIL = '''import torch

def summed(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    return (policy_chosen_logps - policy_rejected_logps).sum()
'''


def test_ray_launcher_trains_dedups_and_reports_on_a_local_ray_instance(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "model")
    data = write_preference_jsonl(tmp_path / "prefs.jsonl", 24)
    fields = dict(model=str(model), dataset=str(data), max_steps=2, batch_size=4, learning_rate=1e-3, precision="fp32",
                  seed=0, eval_fraction=0.25, save_model=False)
    job = TrainJob(config=JobConfig(**fields, ref_cache_dir=str(tmp_path / "refcache")), loss_code=library_code("dpo"),
                   time_limit_s=120)
    bad = TrainJob(config=job.config, loss_code=SHAPE_FAIL, time_limit_s=120)
    root = tmp_path / "ray-jobs"
    assert not ray.is_initialized()
    try:
        launcher = make_launcher(LauncherSettings(kind="ray", ray_num_gpus=0, ray_num_cpus=1,
                                                  ray_init={"num_cpus": 2, "include_dashboard": False}), root)
        assert isinstance(launcher, RayLauncher) and ray.is_initialized()
        handle = launcher.submit(job)
        failing = launcher.submit(bad)
        assert handle.key == job_key(job) and handle.backend == "ray" and not handle.reused
        again = launcher.submit(job)
        assert again.reused and again.key == handle.key  # the same ObjectRef: nothing new runs

        result = launcher.result(handle, timeout=120)
        assert result.ok, result.error
        assert result.steps == 2 and result.eval_pairs == 6 and 0.0 <= result.eval_accuracy <= 1.0
        assert launcher.status(handle) is JobStatus.SUCCEEDED
        assert json.loads((root / handle.key / "progress.json").read_text())["phase"] == "done"

        failed = launcher.result(failing, timeout=120)
        assert not failed.ok and "failed the checks" in failed.error and "stderr (tail)" in failed.error
        assert launcher.status(failing) is JobStatus.FAILED

        # Another launcher (another process) on the same root: the finished job is found, not rerun.
        other = RayLauncher(None, root=root, num_gpus=0)
        found = other.submit(job)
        assert found.reused and other.status(found) is JobStatus.SUCCEEDED
        assert other.result(found).eval_accuracy == result.eval_accuracy

        # The tools on top of Ray: the same job (same key) is reused and its status read back.
        ctx = ToolContext(ToolSettings(work_dir=tmp_path / "work", training={"job": fields}), sandbox=InProcessSandbox(),
                          launcher=launcher)
        submitted = api.submit_training(library_code("dpo"), context=ctx)
        assert submitted.job_id == handle.key and submitted.reused and submitted.launcher == "ray"
        status = api.job_status(submitted.job_id, context=ctx)
        assert status.done and status.status == "succeeded" and status.metrics["eval_accuracy"] == result.eval_accuracy
        assert "job ok" in launcher.logs(handle)
    finally:
        ray.shutdown()
