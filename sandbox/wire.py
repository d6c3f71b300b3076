"""The wire between host and sandbox server: length-prefixed frames, and a restricted unpickler.

Frames: ``HEADER`` (8 bytes, the length) then the bytes, in both directions of the host<->server pipes
(or sockets) and from each child to the server (``write_frame``, ``read_frame``).

Results: a job's result is pickled inside the sandbox child, which runs candidate code; if a candidate
ever got past the policy, those bytes are attacker-controlled, and ``pickle.loads`` on them would run
arbitrary code in the host. ``safe_loads`` therefore only resolves globals from ``ALLOWED_GLOBALS`` (plain
containers, numbers, dates, paths, exceptions of the standard library, numpy arrays, torch tensors
read back with ``torch.load(weights_only=True)``) and classes of lossforge's own modules that are
pydantic models, dataclasses, enums or exceptions. Anything else raises ``pickle.UnpicklingError``.

What it does not guarantee
--------------------------
* It bounds what unpickling can *call*, not how much memory the result takes: the sandbox caps the
  size of a result before it is read (``ProcessSandbox(max_result_mb=...)``).
"""
from __future__ import annotations

import builtins
import dataclasses
import enum
import importlib
import io
import os
import pickle
import struct
from typing import Any

__all__ = ["ALLOWED_GLOBALS", "HEADER", "read_exact", "read_frame", "safe_loads", "write_frame"]

HEADER = struct.Struct("!Q")

_BUILTIN_TYPES = {"set", "frozenset", "complex", "slice", "range", "bytearray", "bytes", "list", "dict", "tuple",
                  "str", "int", "float", "bool", "object", "NotImplemented", "Ellipsis"}

#: (module, name) pairs a sandbox result may reference, besides lossforge classes.
ALLOWED_GLOBALS = frozenset({
    ("copyreg", "_reconstructor"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("collections", "Counter"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "Path"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Tensor"), ("torch", "Size"), ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
})


def _safe_load_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` without arbitrary code: tensors' storages only."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _allowed_lossforge(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if issubclass(obj, (BaseException, enum.Enum)) or dataclasses.is_dataclass(obj):
        return True
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover
        return False
    return issubclass(obj, BaseModel)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins":
            obj = getattr(builtins, name, None)
            if name in _BUILTIN_TYPES or (isinstance(obj, type) and issubclass(obj, BaseException)):
                return obj
        elif module == "torch.storage" and name == "_load_from_bytes":
            return _safe_load_from_bytes
        elif (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        elif module == "torch" and "." not in name:
            import torch

            obj = getattr(torch, name, None)
            if isinstance(obj, torch.dtype):
                return obj
        elif (module.startswith("numpy.dtypes") or module == "numpy") and name.endswith("DType"):
            return super().find_class(module, name)
        elif module.startswith("lossforge.") and "." not in name:
            obj = getattr(importlib.import_module(module), name, None)
            if _allowed_lossforge(obj):
                return obj
        raise pickle.UnpicklingError(f"a sandbox result may not reference {module}.{name}")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` from the sandbox, resolving only the allowed globals (see module docstring)."""
    return _SafeUnpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------------


def write_frame(fd: int, data: bytes) -> None:
    """Write ``HEADER`` + ``data`` to ``fd`` (blocking)."""
    view = memoryview(HEADER.pack(len(data)))
    while view:
        view = view[os.write(fd, view):]
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]):]


def read_exact(fd: int, n: int) -> bytes:
    """Read exactly ``n`` bytes from ``fd`` (blocking); ``EOFError`` at end of file."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int) -> bytes:
    """One frame from ``fd``; ``ValueError`` if it announces more than ``limit`` bytes."""
    (size,) = HEADER.unpack(read_exact(fd, HEADER.size))
    if size > limit:
        raise ValueError(f"frame of {size} bytes announced; at most {limit} allowed")
    return read_exact(fd, size)
