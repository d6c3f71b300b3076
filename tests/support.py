"""Helpers shared by test modules (not fixtures of every test: import what you use)."""
from __future__ import annotations

import contextlib
import os
import types
from typing import Iterator

import pytest
import torch


def exec_candidate(code: str) -> types.FunctionType:
    """Exec trusted candidate source in a fresh namespace and return its one function."""
    namespace: dict = {}
    exec(compile(code, "<candidate>", "exec"), namespace)
    functions = [v for v in namespace.values() if isinstance(v, types.FunctionType)]
    assert len(functions) == 1
    return functions[0]


#: Scripted LLM proposals: a loss that passes every check, and one that fails "shape" (a scalar).
SIGMOID_CODE = """import torch
import torch.nn.functional as F

def smooth_sigmoid(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin) + 0.1 * F.softplus(-beta * margin) ** 2
"""
SCALAR_CODE = """import torch
import torch.nn.functional as F

def scalar_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return (-F.logsigmoid(beta * margin)).mean()
"""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP threads only cost time (2x on a busy machine); restored afterwards.

    Autouse in the modules that import it.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_docker_engine() -> None:
    """Skip (with the reason) where no Docker engine answers; fail instead where the environment says an
    engine must be there (``LOSSFORGE_REQUIRE_DOCKER=1``, set by ``scripts/test.sh`` after it started one),
    so CI never skips the Docker tests silently."""
    from lossforge.sandbox.docker_backend import docker_status

    status = docker_status()
    if status["available"]:
        return
    reason = f"no Docker engine: {status['reason']}"
    if os.environ.get("LOSSFORGE_REQUIRE_DOCKER") == "1":
        pytest.fail(reason + " (LOSSFORGE_REQUIRE_DOCKER=1: the engine must be running)")
    pytest.skip(reason)


class Evil:
    """Pickles to a call of os.system (what an escaped child could send back). Defined here, in a module
    with a stable import name, so pickling it never depends on how pytest names a test module."""

    def __reduce__(self):
        return (os.system, ("true",))


class Plain:
    """A harmless class outside lossforge (the restricted unpickler refuses it all the same)."""


@contextlib.contextmanager
def local_ray_cluster() -> Iterator[object]:
    """A real local Ray cluster (2 CPUs, no dashboard) for the test, shut down after it (only its own
    processes: unlike `ray stop`, another Ray on the machine is left alone). Skips without ray."""
    ray = pytest.importorskip("ray", reason="ray is not installed (optional: pip install 'lossforge[ray]')")
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
