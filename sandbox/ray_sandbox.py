"""``RaySandbox``: the ``Sandbox`` protocol with every call a Ray task that runs in a sandbox on its worker.

What it guarantees
------------------
* ``check`` and ``run`` behave as ``ProcessSandbox``'s (``lossforge.sandbox.process``): each call is one Ray
  task (``check``: ``check_cpus`` CPUs; ``run``, e.g. a proxy screen: ``run_cpus``) that makes the call in a
  ``ProcessSandbox`` built on the worker from the run's ``SandboxConfig`` by ``build`` (the factory's
  ``sandbox_from_config``; one per worker process and configuration, kept warm). The candidate's code is
  only ever run inside that sandbox, never in the Ray worker itself. A bad candidate is a ``CheckReport``; ``run``'s failures raise ``SandboxError`` with the
  worker's kind ("policy", "timeout", "crashed", "error") and traceback tail.
* A task Ray loses (its worker or node died; retried once by Ray first) is a "crashed" report or
  ``SandboxError("crashed")``; any other Ray failure is ``SandboxError("error")``.
* ``ray`` is imported only here, when a ``RaySandbox`` is made; without it the error names
  ``pip install 'lossforge[ray]'``.
* Ray is initialised once per process: ``address`` None starts a local instance with this machine's CPUs
  (``ray.init(address="local")``), "auto" or ``host:port`` joins that cluster; a process already
  connected is used as it is. The connection is shut down when the last ``RaySandbox`` that made it is
  closed, never when someone else made it.
* Cancellable like ``ProcessSandbox`` (``lossforge.sandbox.cancel``): a cancelled call's task is killed
  and the call raises ``SandboxError("error")``. ``close()`` kills this sandbox's tasks still running and
  is idempotent. Thread-safe.
* ``workers`` counts the calls each worker (``"node_ip:pid"``) made.

What it does not guarantee
--------------------------
* Shared paths: ``run``'s path arguments (the proxy world, the cache directory) are read on the worker,
  so on a multi-node cluster they must be on a shared file system; a task's module must be importable on
  the workers (lossforge's own tasks are).
* A limit on calls at once beyond the cluster's CPUs: the search's ``[search] concurrency`` bounds them.
"""
from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from collections import Counter
from typing import Any, Callable, TypeVar

from lossforge.candidate.report import CheckReport, CheckResult
from lossforge.sandbox.cancel import _CURRENT
from lossforge.sandbox.protocol import SandboxError
from lossforge.sandbox.tasks import _function_name
from lossforge.settings.sandbox import SandboxConfig

__all__ = ["RaySandbox", "import_ray"]

T = TypeVar("T")

_POLL_S = 0.25  # how often a waiting call looks at its cancellation
_INIT_LOCK = threading.Lock()
_OWNERS: set[int] = set()  # ids of the RaySandboxes of this process that share the connection they made


def import_ray() -> Any:
    """The ``ray`` module; ``ImportError`` naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("[search] executor = 'ray' needs ray, an optional dependency: "
                          "pip install 'lossforge[ray]' (or set executor = 'local')") from exc
    return ray


# -- the worker side ---------------------------------------------------------------------------------
_WORKER_SANDBOXES: dict[str, Any] = {}
_WORKER_LOCK = threading.Lock()


def _worker_sandbox(build: Callable[..., Any], config_json: str, timeout: float) -> Any:
    """This worker process's sandbox for the configuration (made on first use, closed at exit)."""
    key = f"{getattr(build, '__qualname__', build)}|{timeout!r}|{config_json}"
    with _WORKER_LOCK:
        sandbox = _WORKER_SANDBOXES.get(key)
        if sandbox is None or sandbox.closed:
            sandbox = build(SandboxConfig.model_validate_json(config_json), timeout=timeout)
            if not _WORKER_SANDBOXES:
                atexit.register(_close_worker_sandboxes)
            _WORKER_SANDBOXES[key] = sandbox
        return sandbox


def _close_worker_sandboxes() -> None:
    with _WORKER_LOCK:
        sandboxes = list(_WORKER_SANDBOXES.values())
        _WORKER_SANDBOXES.clear()
    for sandbox in sandboxes:
        sandbox.close()


def _sandbox_call(build: Callable[..., Any], config_json: str, timeout: float, mode: str, code: str, beta: float,
                  task: Any, args: tuple[Any, ...], run_timeout: float | None) -> tuple[str, str, Any]:
    """The body of every Ray task: the call in this worker's sandbox. Returns ``(worker, kind, value)``:
    kind "ok" (value: the report or the result) or "raise" (value: the ``SandboxError``)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        sandbox = _worker_sandbox(build, config_json, timeout)
        if mode == "check":
            return worker, "ok", sandbox.check(code, beta).model_dump()
        if mode == "warm":
            sandbox.warm()
            return worker, "ok", sandbox.layers()
        return worker, "ok", sandbox.run(code, task, *args, timeout=run_timeout)
    except SandboxError as exc:
        return worker, "raise", exc


# -- the caller side ---------------------------------------------------------------------------------
class RaySandbox:
    """The Ray backend of the ``Sandbox`` protocol (see the module docstring).

    ``config``: the run's ``[sandbox]`` settings, used by each worker's ``ProcessSandbox``.
    ``build``: how a worker makes that sandbox, ``build(config, timeout=seconds)``; a module-level function
    (Ray pickles it by reference), in practice ``lossforge.sandbox.factory.sandbox_from_config``.
    ``timeout``: seconds for a ``check`` (and the default for ``run``); default ``config.check_timeout``.
    ``address``: None (a local Ray instance for this process), "auto" or a cluster address.
    ``check_cpus`` / ``run_cpus``: the CPUs Ray reserves for a check task and a run task (a screen's
    torch threads), at most the CPUs of the cluster's largest node when it is made. ``init_kwargs``: more
    ``ray.init`` arguments when this sandbox connects.
    Raises ``ImportError`` without ray and ``ConnectionError`` when the cluster cannot be reached.
    """

    backend = "ray"

    def __init__(self, config: SandboxConfig, *, build: Callable[..., Any], timeout: float | None = None,
                 address: str | None = None, check_cpus: float = 1.0, run_cpus: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        self.timeout = float(config.check_timeout if timeout is None else timeout)
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if check_cpus <= 0 or run_cpus <= 0:
            raise ValueError(f"check_cpus and run_cpus must be positive (got {check_cpus}, {run_cpus})")
        self.config = config
        self.address = address
        self._build = build
        self._ray = ray = import_ray()
        self._config_json = config.model_dump_json()
        self._lock = threading.Lock()
        self._active: set[Any] = set()
        self._closed = False
        self.workers: Counter[str] = Counter()
        self._connect(dict(init_kwargs or {}))
        largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0)
        if largest > 0:  # a task asking for more CPUs than any node has would wait forever (Ray: infeasible)
            check_cpus, run_cpus = min(check_cpus, largest), min(run_cpus, largest)
        self.check_cpus, self.run_cpus = check_cpus, run_cpus
        remote = ray.remote(max_retries=1)(_sandbox_call)
        self._check_task = remote.options(num_cpus=check_cpus, name="lossforge-check")
        self._run_task = remote.options(num_cpus=run_cpus, name="lossforge-run")

    def _connect(self, init_kwargs: dict[str, Any]) -> None:
        ray = self._ray
        # Ray's driver otherwise replaces builtins.print for good the first time it relays worker logs
        # (ray.experimental.tqdm_ray, read lazily), which changes print for the whole host process.
        os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
        with _INIT_LOCK:
            if ray.is_initialized():
                if id(self) not in _OWNERS and _OWNERS:
                    _OWNERS.add(id(self))  # another RaySandbox made the connection: share it
                return
            if self.address is None:
                ray.init(address="local", num_cpus=init_kwargs.pop("num_cpus", os.cpu_count() or 1), **init_kwargs)
            else:
                try:
                    ray.init(address=self.address, **init_kwargs)
                except ConnectionError as exc:
                    raise ConnectionError(f"no Ray cluster at [search] ray_address = {self.address!r}: {exc}. "
                                          "Start one (`ray start --head`) or leave ray_address unset for a "
                                          "local instance.") from exc
            _OWNERS.add(id(self))

    # -- the protocol ---------------------------------------------------------------------------------
    def check(self, code: str, beta: float = 0.1) -> CheckReport:
        """Run the check suite on ``code`` in a sandbox on a Ray worker; never raises for a bad candidate."""
        start = time.monotonic()
        try:
            kind, value = self._call(self._check_task, "check", code, beta, None, (), None)
        except SandboxError as exc:
            if exc.kind != "crashed":
                raise
            result = CheckResult(name="crashed", passed=False, seconds=time.monotonic() - start,
                                 evidence=f"the checking task {exc.message}",
                                 hint="the Ray worker running the checks was lost; check the cluster.")
            return CheckReport(passed=False, checks=[result], function_name=_function_name(code),
                               seconds=time.monotonic() - start)
        if kind == "raise":
            raise value
        return CheckReport.model_validate(value)

    def run(self, code: str, task: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Call ``task(loss_fn, *args)`` in a sandbox on a Ray worker and return its result; ``task`` must
        be a module-level function importable on the workers. Raises ``SandboxError``."""
        kind, value = self._call(self._run_task, "run", code, 0.0, task, args,
                                 self.timeout if timeout is None else float(timeout))
        if kind == "raise":
            raise value
        return value

    def warm(self) -> dict[str, Any]:
        """Start one worker's sandbox server (seconds: it imports torch) and return its ``layers()``."""
        kind, value = self._call(self._check_task, "warm", "", 0.0, None, (), None)
        if kind == "raise":
            raise value
        return value

    def close(self) -> None:
        """Kill this sandbox's tasks still running, refuse further calls, and shut Ray down when this was
        the last sandbox using the connection it made; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = list(self._active)
        for ref in active:
            self._ray.cancel(ref, force=True)
        with _INIT_LOCK:
            if id(self) in _OWNERS:
                _OWNERS.discard(id(self))
                if not _OWNERS and self._ray.is_initialized():
                    self._ray.shutdown()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "RaySandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machinery ------------------------------------------------------------------------------------
    def _call(self, remote: Any, mode: str, code: str, beta: float, task: Any, args: tuple[Any, ...],
              run_timeout: float | None) -> tuple[str, Any]:
        """Submit one task and wait for it (watching this thread's cancellation); ``(kind, value)``."""
        ray = self._ray
        cancellation = getattr(_CURRENT, "cancellation", None)
        with self._lock:
            if self._closed:
                raise SandboxError("error", "the sandbox is closed")
            if cancellation is not None and cancellation.cancelled:
                raise SandboxError("error", "the call was cancelled: its sandbox jobs were killed")
            ref = remote.remote(self._build, self._config_json, self.timeout, mode, code, beta, task, args, run_timeout)
            self._active.add(ref)
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=_POLL_S)
                if ready:
                    break
                if cancellation is not None and cancellation.cancelled:
                    ray.cancel(ref, force=True)
                    raise SandboxError("error", "the call was cancelled: its sandbox job was killed")
                if self._closed:
                    raise SandboxError("crashed", "was stopped because the sandbox was closed")
            try:
                worker, kind, value = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.TaskCancelledError) as exc:
                raise SandboxError("crashed", f"was lost on the Ray cluster: {type(exc).__name__}: {exc}") from None
            except ray.exceptions.RayError as exc:
                raise SandboxError("error", f"the Ray task failed: {type(exc).__name__}: {exc}") from None
        finally:
            with self._lock:
                self._active.discard(ref)
        with self._lock:
            self.workers[worker] += 1
        return kind, value
