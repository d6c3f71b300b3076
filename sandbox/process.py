"""``ProcessSandbox``: checks and runs candidate losses in a fresh, isolated, limited child per call.

How it works
------------
A warm worker server (``lossforge.sandbox.server``; one per process and view, shared by every
``ProcessSandbox`` that needs the same view, started on first use: ~2 s to import torch) runs inside the
isolation this host allows (``lossforge.sandbox.isolation``: bubblewrap, else ``unshare(2)``, else a
plain process), with a clean environment. Every ``check``/``run`` sends it a job over a pipe; it forks
one child per job, so a call costs a fork and the work, not a Python + torch start-up. Layers, each
independent of the policy (RestrictedPython) that the child also applies to the candidate:

1. process: a fresh fork per job, its own session and process group, ``PR_SET_PDEATHSIG``;
2. resource limits: address space (``memory_mb``), CPU seconds (a little above the timeout, times the
   threads for ``run``), file size 0, no core, 64 open files, and for ``nobody`` children processes
   (checks: none at all; tasks: the threads they need);
3. wall clock: at ``timeout`` the child's whole process group is killed (and, once no job runs, every
   process left in the children's PID namespace);
4. no network: the server and its children are in a new network namespace (only ``lo``);
5. file system: the host's file system read-only, ``/tmp``, ``/var``, ``/run``, ``/root``, ``/home``,
   ... hidden (empty tmpfs) except the paths the server needs, which are bound back read-only; a
   private scratch directory per job as the working directory;
6. PID namespace: children see only their own namespace's processes (not the host's, not the server);
7. identity: ``nobody`` (65534) with no capabilities and ``no_new_privs`` where the host allows (root);
   a ``run`` task whose path arguments nobody cannot read gets root's file access only (fsuid 0, inside
   the read-only view and PID namespace; see ``lossforge.sandbox.isolation``);
8. environment: the server starts with a fixed, secret-free environment; children also drop
   secret-like names (``SECRET_PATTERN``);
9. results: the host unpickles child output with a restricted unpickler (``lossforge.sandbox.wire``)
   and at most ``max_result_mb`` of it, so even a child that escaped the policy cannot run code in the
   caller.

``layers()`` says which of these are in effect on this host (measured inside the server); ``doctor()``
in ``lossforge.sandbox.doctor`` explains what is missing and why. The parts: ``worker`` (the handle on one
server), ``pool`` (the servers shared across sandboxes), ``cancel`` (``cancellable``), ``tasks`` (helpers
about a job's arguments).

What it guarantees
------------------
* ``check(code, beta)`` returns a ``CheckReport`` for every candidate: the suite's report, or a report
  failing a check named "timeout" (killed at ``timeout`` seconds, or its CPU limit) or "crashed"
  (evidence gives the exit code or signal). It raises ``SandboxError(kind="error")`` only when the
  sandbox itself cannot work (closed, the server cannot start).
* ``run(code, task, *args, timeout=...)`` returns ``task``'s result or raises ``SandboxError`` with kind
  "policy", "timeout", "crashed" or "error". ``task`` is pickled by reference (a module-level function
  chosen by the caller, imported in the server); the candidate is only ever source text. Path
  arguments of ``run`` (absolute paths that exist, at the top level of ``args``) are made visible
  read-only in the view (a new server the first time).
* After a timeout or a crash the sandbox keeps working: every call gets a new child, and a server that
  died is started again on the next call.
* Cancellable: calls a thread makes inside ``with cancellable(c):`` (``lossforge.sandbox.cancel``) stop
  when ``c.cancel()`` is called (from any thread): their running children are killed as at a timeout
  and later calls under ``c`` raise ``SandboxError`` at once, so a cancelled caller never keeps the next
  one waiting.
* Thread-safe: calls from several threads are fine; at most ``max_concurrency`` children run at once
  (default 1: calls are serialised). ``close()`` is idempotent and kills this sandbox's children still
  running (the shared server stays warm for other sandboxes of the process).

What it does not guarantee
--------------------------
* Layers the host does not allow are absent (``layers()`` reports them False): without root or user
  namespaces, and without bubblewrap, it is a process with limits, a clean environment, the policy and
  the restricted result reader, not a container.
* ``memory_mb`` limits address space, not resident memory; torch alone maps about 1 GB, so values below
  ~1500 make every call crash.
* Tasks defined in the program's ``__main__`` work (the server loads the main script as
  ``__mp_main__``, as multiprocessing does), so the main script must be import-safe.
"""
from __future__ import annotations

import math
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from lossforge.candidate.report import CheckReport, CheckResult
from lossforge.sandbox.cancel import _CURRENT, Cancellation, _refuse_if_cancelled
from lossforge.sandbox.isolation import View, base_view, choose_backend, nobody_can_read, server_sys_path
from lossforge.sandbox.pool import _acquire, _release
from lossforge.sandbox.protocol import SandboxError
from lossforge.sandbox.tasks import _function_name, _path_arguments, _signal_name, _task_source_roots, _user_tasks
from lossforge.sandbox.wire import safe_loads
from lossforge.sandbox.worker import _Server, _ServerGone

if TYPE_CHECKING:
    from lossforge.sandbox.docker_backend import DockerSettings

__all__ = ["ProcessSandbox"]

T = TypeVar("T")


class ProcessSandbox:
    """The isolated-process backend of the ``Sandbox`` protocol (see the module docstring).

    ``timeout``: wall-clock seconds for a ``check`` (and the default for ``run``).
    ``memory_mb``: address-space limit of each child, None for no limit.
    ``max_concurrency``: most children running at once across threads (default 1: serialised).
    ``isolation``: "auto" (bubblewrap, else unshare, else none; or ``LOSSFORGE_SANDBOX_ISOLATION``),
    "bwrap", "unshare" or "none"; a backend this host lacks raises ``SandboxError``. "docker": the
    server runs in a locked-down container (``lossforge.sandbox.docker_backend``; ``docker`` settings).
    ``expose``: host paths made visible (read-only) inside the sandbox besides the Python installation,
    ``sys.path`` and ``run``'s path arguments (e.g. a cache directory tasks read).
    ``max_result_mb``: largest pickled result a child may send back.
    ``task_processes``: processes/threads a ``run`` task running as nobody may add (``RLIMIT_NPROC``).
    """

    def __init__(self, timeout: float = 10.0, memory_mb: int | None = 4096, *, max_concurrency: int = 1,
                 isolation: str = "auto", expose: tuple[str, ...] | list[str] = (), max_result_mb: int = 64,
                 task_processes: int | None = None, docker: "DockerSettings | None" = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_result_bytes = int(max_result_mb) << 20
        self.task_processes = task_processes if task_processes is not None else 32 + 2 * (os.cpu_count() or 1)
        if isolation == "docker":
            from lossforge.sandbox.docker_backend import DockerSettings, docker_view

            settings = docker or DockerSettings()
            if settings.memory_mb is None:  # room for one child at its limit beside the server
                import dataclasses

                settings = dataclasses.replace(settings, memory_mb=(memory_mb or 4096) + 1024)
            self._view = docker_view(settings, tuple(str(p) for p in expose))
        else:
            try:
                backend = choose_backend(isolation)
            except ValueError as exc:
                raise SandboxError("error", str(exc)) from None
            self._view = base_view(backend, tuple(str(p) for p in expose))
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._servers: dict[View, _Server] = {}
        self._inflight: Counter[View] = Counter()
        self._active: dict[tuple[int, int], tuple[_Server, int]] = {}
        self._closed = False

    # -- public API ---------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """"bwrap", "unshare", "none" or "docker"."""
        return self._view.backend

    def check(self, code: str, beta: float = 0.1) -> CheckReport:
        """Run the check suite on ``code`` in a fresh child; never raises for a bad candidate."""
        start = time.monotonic()
        kind, payload, tail = self._spawn("check", code, beta, None, (), self.timeout, single_thread=True)
        elapsed = time.monotonic() - start
        if kind == "ok":
            try:
                return CheckReport.model_validate(payload)
            except Exception as exc:  # noqa: BLE001 - a child that escaped could send anything
                kind, payload = "error", f"the report could not be read: {type(exc).__name__}: {exc}"
        if kind == "timeout":
            result = CheckResult(
                name="timeout", passed=False, seconds=elapsed,
                evidence=f"the checks did not finish within {self.timeout:g} s ({payload}); the process was killed.",
                hint="a loss must be cheap elementwise tensor math on (batch,) tensors: no large intermediate "
                     "tensors (e.g. (batch, batch) or bigger), no long loops.")
        else:  # crashed, or the suite itself failed
            what = payload if kind == "crashed" else f"failed: {payload}"
            result = CheckResult(
                name="crashed", passed=False, seconds=elapsed, evidence=f"the checking process {what}",
                hint="the loss crashed the process: avoid huge tensors (memory limit "
                     f"{self.memory_mb} MB) and anything but tensor math.")
        return CheckReport(passed=False, checks=[result], function_name=_function_name(code), seconds=elapsed)

    def run(self, code: str, task: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Call ``task(loss_fn, *args)`` in a fresh child and return its result; ``task`` must be a
        module-level function and its result picklable. Raises ``SandboxError``."""
        limit = self.timeout if timeout is None else float(timeout)
        kind, payload, tail = self._spawn("run", code, 0.0, task, args, limit, single_thread=False)
        if kind == "ok":
            return payload
        if kind == "timeout":
            raise SandboxError("timeout", f"the task did not finish within {limit:g} s ({payload}); "
                                          "the process was killed", tail)
        if kind == "crashed":
            raise SandboxError("crashed", f"the sandbox process {payload}", tail)
        raise SandboxError(kind, str(payload), tail)

    def warm(self) -> None:
        """Start the worker server (imports torch once, seconds) and fork one child, so the first real
        call is fast."""
        kind, payload, tail = self._spawn("ping", "", 0.0, None, (), max(self.timeout, 60.0), single_thread=True)
        if kind != "ok":
            raise SandboxError(kind, str(payload), tail)

    def layers(self) -> dict[str, bool | str]:
        """Each isolation layer and whether (and how) it is in effect for this sandbox's children on this
        host, as measured inside the server at start (starts it if needed). Absent layers are False."""
        server = self._server_for(self._view)
        try:
            return server.describe(self)
        finally:
            self._done_with(server)

    @property
    def server_pid(self) -> int | None:
        """The host pid of the current worker server (bubblewrap's, under bwrap), or None if not started."""
        server = self._servers.get(self._view)
        return server.pid if server is not None and not server.dead else None

    def close(self) -> None:
        """Kill this sandbox's children still running and refuse further calls; idempotent. The shared
        server stays warm for other sandboxes of this process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = list(self._active.values())
            servers = list(self._servers.values())
            self._servers.clear()
        for server, job_id in active:
            server.kill(job_id)
        for server in servers:
            _release(server, self.max_result_bytes)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ProcessSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machinery ----------------------------------------------------------------------------------
    def _server_for(self, view: View) -> _Server:
        """The server for ``view`` (started if needed), with one in-flight use counted."""
        with self._lock:
            if self._closed:
                raise SandboxError("error", "the sandbox is closed")
            server = self._servers.get(view)
            if server is not None and server.owner != os.getpid():  # inherited through fork
                self._servers.clear()
                self._inflight.clear()
                self._inflight[view] = 0
                server = None
            elif server is not None and server.dead:
                self._servers.pop(view)
                _release(server, self.max_result_bytes)
                server = None
            self._inflight[view] += 1
        if server is None:
            try:
                fresh = _acquire(view, self.max_result_bytes)
            except BaseException:
                with self._lock:
                    self._inflight[view] -= 1
                raise
            with self._lock:
                if fresh.view != view:  # a server with a wider view: adopt it
                    self._inflight[view] -= 1
                    self._inflight[fresh.view] += 1
                    if self._view == view:
                        self._view = fresh.view
                    view = fresh.view
                server = self._servers.get(view)
                if server is None or server.dead:
                    self._servers[view] = server = fresh
                else:
                    _release(fresh, self.max_result_bytes)
        return server

    def _done_with(self, server: _Server) -> None:
        """One in-flight use of ``server`` ended; release servers of views this sandbox left behind."""
        release = []
        with self._lock:
            self._inflight[server.view] -= 1
            for view, srv in list(self._servers.items()):
                if view != self._view and self._inflight[view] <= 0:
                    release.append(self._servers.pop(view))
        for srv in release:
            _release(srv, self.max_result_bytes)

    def _identity(self, server: _Server, paths: list[str]) -> str:
        """Who the job's child runs as (see ``server._become``): nobody wherever the host can switch;
        for a task whose path arguments nobody cannot read, nobody with root file access, but only
        inside a namespaced view (never where a child could signal or read host processes)."""
        facts = server.facts
        if not facts.get("identity_switch"):
            return "root-nocaps" if facts.get("euid") == 0 else "same"
        if server.nobody_ok and all(nobody_can_read(p, server.view) for p in paths):
            return "nobody"
        if server.view.backend in ("bwrap", "unshare") and facts.get("pid_namespace"):
            return "nobody-rootfs"
        return "nobody"

    def _spawn(self, mode: str, code: str, beta: float, task: Callable[..., Any] | None, args: tuple[Any, ...],
               timeout: float, *, single_thread: bool) -> tuple[str, Any, str]:
        _refuse_if_cancelled(getattr(_CURRENT, "cancellation", None))
        with self._slots:
            if self._closed:
                raise SandboxError("error", "the sandbox is closed")
            _refuse_if_cancelled(getattr(_CURRENT, "cancellation", None))  # cancelled while waiting for a slot
            paths: list[str] = []
            payload = b""
            if mode == "run":
                try:
                    payload = pickle.dumps((task, args), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001 - e.g. a lambda or a local function
                    raise SandboxError("error", f"could not start the sandbox process: the task and its arguments "
                                                f"must be picklable (a module-level function): {type(exc).__name__}: "
                                                f"{exc}") from None
                paths = _path_arguments(args)
                if self._view.backend == "docker":
                    from lossforge.sandbox.docker_backend import unreadable_in_container

                    refused = [p for p in paths if unreadable_in_container(p)]
                    if refused:
                        raise SandboxError("error", f"the Docker sandbox's user (uid 65534) cannot read {refused[0]}: "
                                                    "make it readable by others (chmod o+rX; its parent "
                                                    "directories do not matter) or use the default backend")
                needed = [n for p in paths + _task_source_roots(task) for n in self._view.needed(p)]
                if needed:
                    with self._lock:
                        self._view = self._view.with_paths(needed)
            for attempt in range(2):
                server = self._server_for(self._view)
                try:
                    return self._run_job(server, mode, code, beta, payload, task, paths, timeout, single_thread)
                except _ServerGone:
                    if attempt:  # a fresh server died at once too
                        raise SandboxError("error", f"the sandbox server is not running: {server.death}",
                                           server.stderr_tail()) from None
                finally:
                    self._done_with(server)
            raise AssertionError("unreachable")  # pragma: no cover

    def _run_job(self, server: _Server, mode: str, code: str, beta: float, payload: bytes,
                 task: Callable[..., Any] | None, paths: list[str], timeout: float,
                 single_thread: bool) -> tuple[str, Any, str]:
        threads = 1 if single_thread else (os.cpu_count() or 1)
        identity = self._identity(server, paths)
        processes = None
        uid = server.children_uid(identity)
        if identity != "root-nocaps" and uid != 0:  # RLIMIT_NPROC does not bind root
            processes = 1 if mode != "run" else _user_tasks(uid) + self.task_processes
        job: dict[str, Any] = {
            "op": "job", "mode": mode, "code": code, "beta": beta, "payload": payload, "identity": identity,
            "sys_path": server_sys_path() if mode == "run" else None,
            "limits": {
                "wall_seconds": timeout,
                "cpu_seconds": int(math.ceil(timeout * threads)) + 2,
                "memory_bytes": None if self.memory_mb is None else int(self.memory_mb) * 1024 * 1024,
                "file_bytes": 0, "open_files": 64, "processes": processes,
                "max_result_bytes": self.max_result_bytes,
            },
        }
        if mode == "run" and getattr(task, "__module__", None) == "__main__":
            main = sys.modules.get("__main__")
            job["main"] = (getattr(getattr(main, "__spec__", None), "name", None), getattr(main, "__file__", None))
        job_id, waiter = server.submit(job)
        key = (id(server), job_id)
        with self._lock:
            self._active[key] = (server, job_id)
        cancellation: Cancellation | None = getattr(_CURRENT, "cancellation", None)
        if cancellation is not None and not cancellation._add(server, job_id):
            server.kill(job_id)
        try:
            if not waiter.event.wait(timeout):
                server.kill(job_id)
                if not waiter.event.wait(10.0):
                    server.stop(force=True)  # wedged: a fresh one starts on the next call
                return "timeout", "wall-clock limit", ""
            assert waiter.outcome is not None
            if cancellation is not None and cancellation.cancelled:
                return "error", "the call was cancelled: its sandbox job was killed", ""
            return self._outcome(*waiter.outcome)
        finally:
            if cancellation is not None:
                cancellation._discard(server, job_id)
            with self._lock:
                self._active.pop(key, None)

    def _outcome(self, kind: str, data: Any) -> tuple[str, Any, str]:
        if kind == "message":
            try:
                got_kind, payload, tail = safe_loads(data)
            except Exception as exc:  # noqa: BLE001 - refused global, or garbage
                return "error", f"the result could not be read: {type(exc).__name__}: {exc}", ""
            if got_kind == "oom":
                return "crashed", f"ran out of memory (limit {self.memory_mb} MB): {payload}", tail
            if got_kind not in ("ok", "policy", "error"):
                return "error", f"unexpected result kind {got_kind!r}", ""
            return got_kind, payload, tail
        if kind == "exit":
            if self._closed:
                return "crashed", "was stopped because the sandbox was closed", ""
            sig, code = data.get("signal"), data.get("code")
            if sig is not None:
                if sig == signal.SIGXCPU:
                    return "timeout", "CPU-time limit", ""
                extra = ""
                if sig == signal.SIGKILL and self.memory_mb is not None:
                    extra = "; possibly the kernel's out-of-memory killer"
                if sig == signal.SIGXFSZ:
                    extra = "; it tried to write a file"
                return "crashed", f"was killed by {_signal_name(sig)} (exit code {-sig}){extra}", ""
            return "crashed", f"exited with code {code} without a result", ""
        if kind == "timeout":
            return "timeout", "wall-clock limit (server)", ""
        if kind == "toolarge":
            return "error", (f"the result is too large: {data} bytes pickled, at most {self.max_result_bytes} "
                             "allowed"), ""
        if kind == "died":
            if self._closed:
                return "crashed", "was stopped because the sandbox was closed", ""
            return "crashed", f"was lost: {data}", ""
        return "error", str(data), ""
