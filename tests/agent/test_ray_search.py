"""`[search] executor = "ray"`: a search on the tiny proxy whose checks and screens are Ray tasks on a real
local Ray cluster (2 CPUs, no dashboard) started and stopped by the test, two candidates in flight; and
where the train stage sends its jobs under that executor."""
from __future__ import annotations

import builtins
import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest

from lossforge.agent import runner
from lossforge.agent.runner import run_search
from lossforge.agent.supervisor import IN_FLIGHT_META
from lossforge.agent.train_stage import TrainStage
from lossforge.config import RunConfig
from lossforge.rundir.archive import Archive
from lossforge.sandbox.protocol import InProcessSandbox
from tests.support import local_ray_cluster
from tests.agent.sequential_reference import archive_record, case_config

REFERENCE = json.loads((Path(__file__).parent / "data" / "sequential_reference.json").read_text())
PRINT = builtins.print  # as collected, before any Ray driver ran in this process


@pytest.fixture
def ray_cluster():
    with local_ray_cluster() as cluster:
        yield cluster


@pytest.mark.slow
def test_a_search_on_ray_evaluates_its_target_once_each(tmp_path, cache_dir, ray_cluster, monkeypatch) -> None:
    import ray

    from lossforge.sandbox.ray_sandbox import RaySandbox

    made: list = []

    def recording(config: RunConfig):
        made.append(runner_default(config))
        return made[-1]

    runner_default = runner.default_sandbox
    monkeypatch.setattr(runner, "default_sandbox", recording)
    events: list[dict] = []
    config = case_config("random", 1, 5, cache_dir, executor="ray", ray_address=ray_cluster.address, concurrency=2)
    summary = run_search(tmp_path / "run", config, on_event=events.append)

    archive = Archive(tmp_path / "run" / "archive.sqlite", readonly=True)
    rows = archive.all()
    assert summary.evaluated == archive.count_evaluated() == 5
    assert len({c.step for c in rows}) == len(rows) == max(c.step for c in rows) + 1
    assert archive.get_meta(IN_FLIGHT_META) == []
    evaluated = Counter(e["candidate_id"] for e in events if e["kind"] == "evaluated")
    assert len(evaluated) == 5 and max(evaluated.values()) == 1
    checked = [e["candidate_id"] for e in events if e["kind"] == "checking"]
    assert len(checked) == len(set(checked))

    # Ray relayed its workers' logs without replacing this process's print (RAY_TQDM_PATCH_PRINT)
    assert builtins.print is PRINT, builtins.print
    # the checks and screens were Ray tasks in the cluster's workers, and the run closed its connection
    (sandbox,) = made
    assert isinstance(sandbox, RaySandbox) and sandbox.closed and not ray.is_initialized()
    screens = sum(1 for e in events if e["kind"] == "screen_started")
    assert sum(sandbox.workers.values()) >= len(checked) + screens  # and the search's other sandbox calls
    assert all(int(worker.rsplit(":", 1)[1]) != os.getpid() for worker in sandbox.workers)

    # a loss screened here and on this machine (the recorded sequential search) has the same fitness
    local = {r["code_hash"]: r["fitness"] for r in REFERENCE["random-1-5"] if r["fitness"] is not None}
    on_ray = {r["code_hash"]: r["fitness"] for r in archive_record(tmp_path / "run") if r["fitness"] is not None}
    shared = set(local) & set(on_ray)
    assert shared
    for code_hash in shared:
        assert math.isclose(on_ray[code_hash], local[code_hash], rel_tol=1e-6, abs_tol=1e-9)


def test_the_train_stage_sends_jobs_to_ray_under_the_ray_executor(tmp_path) -> None:
    def launcher_of(search: dict, train: dict) -> object:
        config = RunConfig.model_validate({"search": search, "train": train})
        archive = Archive(tmp_path / f"archive-{len(list(tmp_path.iterdir()))}.sqlite")
        try:
            return TrainStage(config, archive, InProcessSandbox()).tool_context().settings.training.launcher
        finally:
            archive.close()

    default = launcher_of({"executor": "ray", "ray_address": "10.0.0.1:6379"}, {})
    assert (default.kind, default.ray_address, default.ray_num_gpus) == ("ray", "10.0.0.1:6379", 1.0)
    own = launcher_of({"executor": "ray"}, {"launcher": {"ray_num_gpus": 0.5}})
    assert (own.kind, own.ray_address, own.ray_num_gpus) == ("ray", "local", 0.5)  # a local Ray for the run
    assert launcher_of({"executor": "ray"}, {"launcher": "local"}).kind == "local"  # set explicitly: kept
    assert launcher_of({"executor": "ray"}, {"launcher": "slurm"}).kind == "slurm"
    assert launcher_of({}, {}).kind == "local"  # the local executor: today's launcher
