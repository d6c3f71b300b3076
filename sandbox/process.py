"""``ProcessSandbox``: checks and runs candidate losses in a fresh, limited child process per call.

How it works
------------
A multiprocessing "forkserver" context whose server preloads ``torch`` and
``lossforge.sandbox.checks`` (``set_forkserver_preload``, set once per process before the server
starts). Every ``check``/``run`` forks a fresh child from that warm server, so a call costs a fork and
the work itself, not a Python + torch start-up (seconds). The child:

1. ``os.setsid()``: its own session and process group, so a hard kill takes any descendants too;
2. scrubs ``os.environ`` of variables whose names look like secrets (``SECRET_PATTERN``: ``*KEY*``,
   ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*PASSWD*``, ``*CREDENTIAL*``, ``*AUTH*``);
3. points stdin/stdout/stderr at ``/dev/null`` (results and tracebacks come back through the pipe);
4. sets resource limits: ``RLIMIT_AS`` = ``memory_mb`` (if not None), ``RLIMIT_CPU`` a little above the
   wall-clock timeout (times the thread count for ``run``), ``RLIMIT_FSIZE`` = 0 (no file writes),
   ``RLIMIT_CORE`` = 0, ``RLIMIT_NOFILE`` = 64 (or just above the descriptors already open), and, when
   not running as root, ``RLIMIT_NPROC`` = 0 for checks (no new processes or threads: the checks run on
   one thread; root ignores the limit, and ``run`` tasks may need threads, so they do not get it);
5. ``torch.set_num_threads(1)`` for checks;
6. runs ``run_checks`` (``check``) or ``task(loss_fn, *args)`` (``run``) and sends the outcome back
   through a ``Pipe``.

The parent waits with a wall-clock timeout on the pipe and the child's sentinel. On timeout it kills the
child's whole process group (``os.killpg(pid, SIGKILL)``); a child that dies without answering
(segfault, ``os._exit``, SIGKILL, out of memory) is a crash.

What it guarantees
------------------
* ``check(code, beta)`` returns a ``CheckReport`` for every candidate: the suite's report, or a report
  failing a check named "timeout" (killed at ``timeout`` seconds, or its CPU limit) or "crashed"
  (evidence gives the exit code or signal). It raises ``SandboxError(kind="error")`` only when the
  sandbox itself cannot work (closed, the fork server cannot start).
* ``run(code, task, *args, timeout=...)`` returns ``task``'s result or raises ``SandboxError`` with kind
  "policy", "timeout", "crashed" or "error".
* After a timeout or a crash the sandbox keeps working: every call gets a new child.
* Thread-safe: calls from several threads are fine; at most ``max_concurrency`` children run at once
  (default 1: calls are serialised). ``close()`` is idempotent and kills children still running.

What it does not guarantee
--------------------------
* Not a container: the child runs as the same user, sees the same file system and network. The policy
  (no ``open``, no ``os``, no imports, RestrictedPython's guarded attribute access) is what keeps
  candidate code from reaching them; the process boundary, the limits and the hard kill are what keep a
  bad candidate from hanging, exhausting or crashing the caller. For hostile code use a container
  backend.
* The fork server itself is started from the caller's environment, so secrets stay in its initial
  environment block (``/proc/<pid>/environ``); children only scrub ``os.environ``. Candidates cannot
  read files, so this matters only if the policy is bypassed.
* The fork server is shared by everything in this process that uses multiprocessing's forkserver; if it
  was started before the first ``ProcessSandbox``, the preload is not applied and children are slower
  (they import torch themselves); ``close()`` does not stop it.
* ``memory_mb`` limits address space, not resident memory; torch alone maps about 1 GB, so values below
  ~1500 make every call crash.
* As with any forkserver/spawn use of multiprocessing, the program's main script must be import-safe
  (``if __name__ == "__main__":``): the fork server imports it once. A program started as
  ``python -m pkg.mod`` has ``pkg.mod`` re-imported in every child (multiprocessing's rule), which
  adds that module's import time to every call; console scripts and ``python -m pytest`` do not.
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from lossforge.sandbox.protocol import SandboxError, traceback_tail
from lossforge.sandbox.report import CheckReport, CheckResult

__all__ = ["ProcessSandbox", "SECRET_PATTERN", "PRELOAD_MODULES"]

T = TypeVar("T")

#: Environment variable names that are removed in every child.
SECRET_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)

#: Modules the fork server imports once, so each child starts warm. "__main__" keeps multiprocessing's
#: default (the caller's main module is imported once in the server, not again in every child).
PRELOAD_MODULES = ["__main__", "torch", "lossforge.sandbox.checks", "lossforge.sandbox.process"]

_PRELOAD_LOCK = threading.Lock()
_preload_set = False


def _forkserver_context() -> multiprocessing.context.BaseContext:
    """The forkserver context, with the preload list set once per process (before the server starts)."""
    global _preload_set
    ctx = multiprocessing.get_context("forkserver")
    with _PRELOAD_LOCK:
        if not _preload_set:
            ctx.set_forkserver_preload(PRELOAD_MODULES)
            _preload_set = True
    return ctx


# --------------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    memory_mb: int | None
    cpu_seconds: int
    single_thread: bool


def _set_limit(which: int, value: int) -> None:
    """Lower soft and hard limit to ``value`` (CPU: hard 2 s above, so SIGXCPU comes before SIGKILL)."""
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    new_hard = value
    if which == resource.RLIMIT_CPU:
        new_hard = value + 2 if hard == resource.RLIM_INFINITY else max(value, min(value + 2, hard))
    try:
        resource.setrlimit(which, (value, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(which, (value, hard))


def _die_with_parent() -> None:
    """SIGKILL this child when its parent, the fork server, exits (PR_SET_PDEATHSIG).

    The fork server exits when the search process dies, even by kill -9, so no orphaned screen keeps
    burning CPU after its search is gone. Linux only; elsewhere a no-op.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _isolate(limits: _Limits) -> None:
    """Everything the child does before it touches the candidate."""
    try:
        os.setsid()
    except OSError:  # already a session leader
        pass
    _die_with_parent()
    for name in list(os.environ):
        if SECRET_PATTERN.search(name):
            del os.environ[name]  # also unsetenv() at the C level
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)

    if limits.memory_mb is not None:
        _set_limit(resource.RLIMIT_AS, int(limits.memory_mb) * 1024 * 1024)
    _set_limit(resource.RLIMIT_CPU, max(1, int(limits.cpu_seconds)))
    _set_limit(resource.RLIMIT_FSIZE, 0)
    _set_limit(resource.RLIMIT_CORE, 0)
    try:
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        highest = 32
    _set_limit(resource.RLIMIT_NOFILE, max(64, highest + 16))

    import torch

    if limits.single_thread:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already initialised in the server; harmless
            pass
        if os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):
            # Per user and counting threads, so only where nothing else needs to start: one-thread checks.
            _set_limit(resource.RLIMIT_NPROC, 0)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _child_main(conn: Any, mode: str, code: str, beta: float, task: Callable[..., Any] | None,
                args: tuple[Any, ...], limits: _Limits) -> None:
    """Entry point of every sandbox child. Sends exactly one message: (kind, payload_or_message, tail)."""
    try:
        _isolate(limits)
        if mode == "check":
            from lossforge.sandbox.checks import run_checks

            message: tuple[Any, ...] = ("ok", run_checks(code, beta).model_dump(), "")
        elif mode == "run":
            from lossforge.sandbox.policy import PolicyViolation, load_candidate

            try:
                loaded = load_candidate(code)
            except PolicyViolation as v:
                message = ("policy", str(v), "")
            else:
                assert task is not None
                message = ("ok", task(loaded.fn, *args), "")
        elif mode == "ping":
            message = ("ok", os.getpid(), "")
        else:  # pragma: no cover
            message = ("error", f"unknown mode {mode!r}", "")
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        if _is_oom(exc):
            message = ("crashed", f"ran out of memory (limit {limits.memory_mb} MB): {type(exc).__name__}: {exc}",
                       traceback_tail(exc))
        else:
            message = ("error", f"{type(exc).__name__}: {exc}", traceback_tail(exc))
    try:
        conn.send(message)
    except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable task result
        try:
            conn.send(("error", f"the result could not be sent back: {type(exc).__name__}: {exc}", ""))
        except BaseException:  # noqa: BLE001
            pass
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------------


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _function_name(code: str) -> str | None:
    match = re.search(r"^def\s+([A-Za-z]\w*)\s*\(", code if isinstance(code, str) else "", re.MULTILINE)
    return match.group(1) if match else None


class ProcessSandbox:
    """The isolated-process backend of the ``Sandbox`` protocol (see the module docstring).

    ``timeout``: wall-clock seconds for a ``check`` (and the default for ``run``).
    ``memory_mb``: address-space limit of each child, None for no limit.
    ``max_concurrency``: most children running at once across threads (default 1: serialised).
    """

    def __init__(self, timeout: float = 10.0, memory_mb: int | None = 4096, *, max_concurrency: int = 1) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self._ctx = _forkserver_context()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._active: set[Any] = set()
        self._closed = False

    # -- public API ---------------------------------------------------------------------------------
    def check(self, code: str, beta: float = 0.1) -> CheckReport:
        """Run the check suite on ``code`` in a fresh child; never raises for a bad candidate."""
        start = time.monotonic()
        kind, payload, tail = self._spawn("check", code, beta, None, (), self.timeout, single_thread=True)
        elapsed = time.monotonic() - start
        if kind == "ok":
            return CheckReport.model_validate(payload)
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
        """Start the fork server (imports torch once, seconds) and fork one child, so the first real call
        is fast."""
        kind, payload, tail = self._spawn("ping", "", 0.0, None, (), max(self.timeout, 60.0), single_thread=True)
        if kind != "ok":
            raise SandboxError(kind, str(payload), tail)

    def close(self) -> None:
        """Kill children still running and refuse further calls; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = list(self._active)
        for proc in active:
            self._kill(proc)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ProcessSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machinery ----------------------------------------------------------------------------------
    def _spawn(self, mode: str, code: str, beta: float, task: Callable[..., Any] | None, args: tuple[Any, ...],
               timeout: float, *, single_thread: bool) -> tuple[str, Any, str]:
        with self._slots:
            with self._lock:
                if self._closed:
                    raise SandboxError("error", "the sandbox is closed")
            threads = 1 if single_thread else (os.cpu_count() or 1)
            limits = _Limits(memory_mb=self.memory_mb, cpu_seconds=int(math.ceil(timeout * threads)) + 2,
                             single_thread=single_thread)
            recv_end, send_end = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(target=_child_main, args=(send_end, mode, code, beta, task, args, limits),
                                     name=f"lossforge-sandbox-{mode}", daemon=True)
            try:
                proc.start()
            except Exception as exc:  # noqa: BLE001 - unpicklable task/args, or no fork server
                recv_end.close()
                raise SandboxError("error", f"could not start the sandbox process: {type(exc).__name__}: {exc}",
                                   traceback_tail(exc)) from exc
            finally:
                send_end.close()
            with self._lock:
                self._active.add(proc)
            outcome: tuple[str, Any, str] | None = None
            try:
                outcome = self._wait(proc, recv_end, timeout)
                return outcome
            finally:
                # Kill the group either way (stray descendants). After a normal answer, do not wait to
                # reap: multiprocessing reaps finished children on the next start(); saves ~10 ms a call.
                self._kill(proc, wait=outcome is None or outcome[0] != "ok")
                recv_end.close()
                with self._lock:
                    self._active.discard(proc)

    def _wait(self, proc: Any, conn: Any, timeout: float) -> tuple[str, Any, str]:
        ready = multiprocessing.connection.wait([conn, proc.sentinel], timeout=timeout)
        if conn in ready or conn.poll():
            try:
                kind, payload, tail = conn.recv()
                return kind, payload, tail
            except (EOFError, OSError):
                pass  # died without answering
            except Exception as exc:  # noqa: BLE001 - e.g. the result cannot be unpickled here
                return "error", f"the result could not be read: {type(exc).__name__}: {exc}", ""
        if not ready:
            self._kill(proc)
            return "timeout", "wall-clock limit", ""
        proc.join(timeout=2.0)
        code = proc.exitcode
        if self._closed:
            return "crashed", "was stopped because the sandbox was closed", ""
        if code is not None and code < 0:
            sig = -code
            if sig == signal.SIGXCPU:
                return "timeout", "CPU-time limit", ""
            extra = ""
            if sig == signal.SIGKILL and self.memory_mb is not None:
                extra = "; possibly the kernel's out-of-memory killer"
            if sig == signal.SIGXFSZ:
                extra = "; it tried to write a file"
            return "crashed", f"was killed by {_signal_name(sig)} (exit code {code}){extra}", ""
        return "crashed", f"exited with code {code} without a result", ""

    @staticmethod
    def _kill(proc: Any, wait: bool = True) -> None:
        """SIGKILL the child's process group (the child is its leader after setsid); reap it if ``wait``."""
        pid = proc.pid
        if pid is not None and proc.exitcode is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # not (yet) a group leader, or gone
            try:
                proc.kill()
            except (ProcessLookupError, OSError, ValueError):
                pass
        if wait:
            proc.join(timeout=5.0)


def _latency_demo(n: int = 20) -> None:  # pragma: no cover - manual benchmark
    dpo = (
        "import torch.nn.functional as F\n\n"
        "def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
        "    return -F.logsigmoid(beta * logits)\n"
    )
    with ProcessSandbox() as sandbox:
        t0 = time.perf_counter()
        sandbox.warm()
        print(f"fork server start + first child: {time.perf_counter() - t0:.2f} s")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            report = sandbox.check(dpo)
            times.append(time.perf_counter() - t)
            assert report.passed, report.summary()
        print(f"check() latency over {n} calls: p50 {statistics.median(times) * 1000:.1f} ms, "
              f"min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


if __name__ == "__main__":  # python -m lossforge.sandbox.process: prints the check() latency
    import subprocess
    import sys

    # Re-run from `-c`: under `-m`, multiprocessing would re-import this module as every child's __main__.
    raise SystemExit(subprocess.call(
        [sys.executable, "-c", "from lossforge.sandbox.process import _latency_demo; _latency_demo()"]))
