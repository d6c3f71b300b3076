"""RaySandbox on a real local Ray cluster (2 CPUs, no dashboard) started and stopped by the test: checks and
tasks give what ProcessSandbox gives, failures keep their kind, a cancelled call stops, the calls run in Ray
workers, and the connection the sandbox made is closed with it. Without ray the error names the extra."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import pytest

from lossforge.sandbox.cancel import Cancellation, cancellable
from lossforge.sandbox.process import ProcessSandbox
from lossforge.sandbox.protocol import Sandbox, SandboxError
from lossforge.settings.sandbox import SandboxConfig
from tests.support import local_ray_cluster

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
DPO = f"""import torch.nn.functional as F

def dpo({SIG}):
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits)
"""
PREFERS_REJECTED = DPO.replace("return -F.logsigmoid", "return F.softplus")


# -- module-level tasks (the worker's sandbox child imports them by reference) ---------------------------
def sum_losses(loss_fn: Any, values: list[float]) -> float:
    import torch

    x = torch.tensor(values)
    return float(loss_fn(x, x - 1.0, x, x, 0.1).sum())


def raise_value_error(loss_fn: Any) -> None:
    raise ValueError("bad task input")


def sleep_long(loss_fn: Any) -> None:
    time.sleep(120)


def _without_timings(report: Any) -> dict[str, Any]:
    data = report.model_dump()
    data.pop("seconds")
    data["properties"] = {k: v for k, v in data["properties"].items() if not k.startswith("seconds")}
    for check in data["checks"]:
        check.pop("seconds")
    return data


def test_a_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.sandbox.factory import sandbox_for_search

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lossforge\[ray\]'"):
        sandbox_for_search(SandboxConfig(), executor="ray")


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray_cluster() as cluster:
        yield cluster


@pytest.mark.slow
def test_ray_sandbox_matches_the_process_sandbox_and_runs_in_ray_workers(ray_cluster) -> None:
    import psutil
    import ray

    from lossforge.sandbox.factory import sandbox_for_search
    from lossforge.sandbox.ray_sandbox import RaySandbox

    config = SandboxConfig(check_timeout=20.0)
    local = ProcessSandbox(timeout=20.0, memory_mb=config.memory_mb)
    remote = sandbox_for_search(config, executor="ray", ray_address=ray_cluster.address)
    try:
        assert isinstance(remote, RaySandbox) and isinstance(remote, Sandbox) and ray.is_initialized()
        for code in (DPO, PREFERS_REJECTED):
            here, there = local.check(code), remote.check(code)
            assert _without_timings(there) == _without_timings(here)
        assert remote.check(DPO).passed and remote.check(PREFERS_REJECTED).failed_check == "prefers_chosen"

        values = [1.0, -2.0]
        assert remote.run(DPO, sum_losses, values, timeout=20.0) == local.run(DPO, sum_losses, values, timeout=20.0)
        with pytest.raises(SandboxError) as info:
            remote.run("import os\n" + DPO, sum_losses, [1.0], timeout=20.0)
        assert info.value.kind == "policy" and "imports" in info.value.message
        with pytest.raises(SandboxError) as info:
            remote.run(DPO, raise_value_error, timeout=20.0)
        assert info.value.kind == "error" and "ValueError: bad task input" in info.value.message
        assert "raise_value_error" in info.value.traceback_tail
        with pytest.raises(SandboxError) as info:
            remote.run(DPO, sleep_long, timeout=1.0)
        assert info.value.kind == "timeout"

        # a cancelled call (lossforge.sandbox.cancel) kills its task and raises at once
        cancellation = Cancellation()
        threading.Timer(1.0, cancellation.cancel).start()
        started = time.monotonic()
        with cancellable(cancellation), pytest.raises(SandboxError, match="cancelled") as info:
            remote.run(DPO, sleep_long, timeout=60.0)
        assert info.value.kind == "error" and time.monotonic() - started < 30

        # every call ran in a Ray worker process of the cluster, not in this one
        assert sum(remote.workers.values()) == 8  # 4 checks, 4 runs
        for worker in remote.workers:
            pid = int(worker.rsplit(":", 1)[1])
            assert pid != os.getpid()
            assert psutil.Process(pid).cmdline()[0].startswith("ray::")  # Ray's worker process title
    finally:
        local.close()
        remote.close()
        remote.close()  # idempotent
    assert not ray.is_initialized()  # the sandbox made the connection, so it closed it
    with pytest.raises(SandboxError, match="closed"):
        remote.run(DPO, sum_losses, [1.0], timeout=5.0)


@pytest.mark.slow
def test_without_an_address_a_local_ray_lives_as_long_as_its_sandboxes() -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (optional: pip install 'lossforge[ray]')")
    from lossforge.sandbox.factory import sandbox_from_config
    from lossforge.sandbox.ray_sandbox import RaySandbox

    assert not ray.is_initialized()
    first = RaySandbox(SandboxConfig(), build=sandbox_from_config, run_cpus=64, init_kwargs={"include_dashboard": False})
    try:
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == (os.cpu_count() or 1)
        assert first.run_cpus == os.cpu_count()  # a screen asking for more CPUs than a node has would never run
        second = RaySandbox(SandboxConfig(), build=sandbox_from_config)  # shares the connection the first made
        assert second.check(DPO).passed
        first.close()
        assert ray.is_initialized()  # the second still uses it
        second.close()
        assert not ray.is_initialized()  # the last sandbox that used the local instance shut it down
    finally:
        first.close()
        if ray.is_initialized():
            ray.shutdown()
