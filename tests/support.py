"""Helpers shared by test modules (not fixtures of every test: import what you use)."""
from __future__ import annotations

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
