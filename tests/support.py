"""Helpers shared by test modules (not fixtures of every test: import what you use)."""
from __future__ import annotations

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
