"""The host's handle on one worker server (``_Server``): start it, submit and kill jobs, stop it.

A ``_Server`` starts ``lossforge.sandbox.server`` in its ``View`` (``isolation.server_command``) from one
long-lived launcher thread, sends it the setup frame, waits for its ``hello`` (the layer facts it
measured) and then carries jobs: ``submit`` returns a ``_Waiter`` that a reader thread completes with the
server's answer; a server that dies completes every waiter with "died". The Docker backend subclasses it
(``docker_backend.DockerServer``) to launch a container instead of a process.
"""
from __future__ import annotations

import concurrent.futures
import os
import pickle
import signal
import subprocess
import tempfile
import threading
from typing import Any, Protocol

from lossforge.sandbox.isolation import (
    View,
    clean_environment,
    nobody_can_read,
    probe_host,
    server_command,
    server_sys_path,
)
from lossforge.sandbox.protocol import SandboxError, traceback_tail
from lossforge.sandbox.syscalls import NOBODY
from lossforge.sandbox.wire import read_frame, safe_loads, write_frame

#: Seconds to wait for a new server's "hello" (it imports torch and warms the check suite).
STARTUP_TIMEOUT = 120.0


class SandboxLimits(Protocol):
    """What ``describe`` reads of the sandbox asking (``process.ProcessSandbox``): its children's limits."""

    memory_mb: int | None
    max_result_bytes: int


# Processes are started from one long-lived thread: PR_SET_PDEATHSIG (bubblewrap's --die-with-parent,
# the server's own) fires when the *thread* that started the process exits, not only the process.
_LAUNCHER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossforge-sandbox-launcher")


def _after_fork_in_child() -> None:
    """A forked child of the caller has none of the parent's threads: the launcher is the parent's, so it
    starts its own (its servers: ``pool``)."""
    global _LAUNCHER
    _LAUNCHER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                      thread_name_prefix="lossforge-sandbox-launcher")


os.register_at_fork(after_in_child=lambda: _after_fork_in_child())


class _Waiter:
    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: tuple[str, Any] | None = None

    def set(self, kind: str, data: Any) -> None:
        if self.outcome is None:
            self.outcome = (kind, data)
        self.event.set()


class _ServerGone(Exception):
    """The server died before it took the job (the job never ran)."""


class _Server:
    """The host's handle on one worker server: start, submit jobs, kill jobs, stop."""

    def __init__(self, view: View, max_result_bytes: int) -> None:
        self.view = view
        self.max_frame = max_result_bytes + (1 << 20)
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.waiters: dict[int, _Waiter] = {}
        self.next_id = 1
        self.proc: subprocess.Popen[bytes] | None = None
        self.in_w: int | None = None
        self.facts: dict[str, Any] = {}
        self.notes: list[str] = []
        self.hello = threading.Event()
        self.started = False
        self.dead = False
        self.death = ""
        self.refs = 0
        self.stderr: Any = None
        self.nobody_ok = False
        self.owner = os.getpid()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def ensure_started(self) -> None:
        with self.start_lock:
            if self.started:
                if self.dead:
                    raise SandboxError("error", f"the sandbox server is not running: {self.death}")
                return
            self.started = True
            self._start()

    def _setup(self) -> dict[str, Any]:
        """The setup frame the server reads first (see ``server.main``)."""
        host = probe_host()
        return {
            "backend": self.view.backend, "host_pid": os.getpid(), "sys_path": server_sys_path(),
            "hide_dirs": list(self.view.hide_dirs), "hide_files": list(self.view.hide_files),
            "expose": list(self.view.expose), "host_ids": {k: v for k, v in host.host_ids.items()
                                                         if k in self.view.hide_dirs},
            "pid_namespace": self.view.backend != "none",
        }

    def _launch(self, setup: dict[str, Any]) -> tuple[int, int]:
        """Start the server process and send it ``setup``; returns (job pipe write end, message pipe read
        end). Raises ``SandboxError`` when it cannot be started."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        setup_r, setup_w = os.pipe()
        self.stderr = tempfile.TemporaryFile()
        argv = server_command(self.view, (in_r, out_w, setup_r))
        try:
            self.proc = _LAUNCHER.submit(
                subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                pass_fds=(in_r, out_w, setup_r), env=clean_environment(), cwd="/", close_fds=True,
                start_new_session=True).result()
        except Exception as exc:  # noqa: BLE001
            for fd in (in_r, in_w, out_r, out_w, setup_r, setup_w):
                os.close(fd)
            raise SandboxError("error", f"could not start the sandbox server: {type(exc).__name__}: {exc}",
                               traceback_tail(exc)) from exc
        for fd in (in_r, out_w, setup_r):
            os.close(fd)
        try:
            write_frame(setup_w, pickle.dumps(setup))
        except OSError:
            pass
        finally:
            os.close(setup_w)
        return in_w, out_r

    def _start(self) -> None:
        try:
            self.in_w, out_r = self._launch(self._setup())
        except SandboxError as exc:
            self.dead = True
            self.death = exc.message
            raise
        threading.Thread(target=self._reader, args=(out_r,), name="lossforge-sandbox-reader", daemon=True).start()
        if not self.hello.wait(STARTUP_TIMEOUT) or self.dead or not self.facts:
            reason = self.death or f"no answer within {STARTUP_TIMEOUT:g} s"
            tail = self.stderr_tail()
            self.stop(force=True)
            raise SandboxError("error", f"the sandbox server did not start: {reason}", tail)
        if not self.facts.get("ready", False):
            tail = self.stderr_tail()
            self.stop(force=True)
            raise SandboxError("error", "the sandbox server could not warm up: " + "; ".join(self.notes), tail)
        self.nobody_ok = self.facts.get("identity_switch", False) and all(
            nobody_can_read(p, self.view) for p in self.view.expose)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - limit))
            return self.stderr.read().decode(errors="replace")
        except (OSError, ValueError, AttributeError):
            return ""

    def _reader(self, fd: int) -> None:
        try:
            while True:
                message = safe_loads(read_frame(fd, self.max_frame))
                if message[0] == "hello":
                    _, facts, notes, ready = message
                    self.facts = dict(facts, ready=ready)
                    self.notes = list(notes)
                    self.hello.set()
                elif message[0] == "done":
                    _, job_id, kind, data = message
                    with self.lock:
                        waiter = self.waiters.pop(job_id, None)
                    if waiter is not None:
                        waiter.set(kind, data)
        except EOFError:
            reason = "the sandbox server exited"
        except Exception as exc:  # noqa: BLE001 - a broken frame: the server cannot be trusted any more
            reason = f"the sandbox server sent a bad frame ({type(exc).__name__}: {exc})"
        finally:
            os.close(fd)
        self._died(reason)

    def _died(self, reason: str) -> None:
        with self.lock:
            if not self.dead:
                self.dead = True
                self.death = reason
            waiters = list(self.waiters.values())
            self.waiters.clear()
        tail = self.stderr_tail(500).strip()
        for waiter in waiters:
            waiter.set("died", reason + (f": {tail}" if tail else ""))
        self.hello.set()
        if self._alive():
            self.stop(force=True)

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children_uid(self, identity: str) -> int:
        """The host uid a job's child runs as with ``identity`` (what ``RLIMIT_NPROC`` counts)."""
        return NOBODY if identity in ("nobody", "nobody-rootfs") else os.getuid()

    def describe(self, sandbox: SandboxLimits) -> dict[str, bool | str]:
        """``ProcessSandbox.layers()`` of this server."""
        return _describe_layers(self, sandbox)

    def submit(self, job: dict[str, Any]) -> tuple[int, _Waiter]:
        """Send ``job``; raises ``_ServerGone`` if the server has died (the caller starts a new one)."""
        with self.lock:
            if self.dead or self.in_w is None:
                raise _ServerGone(self.death)
            job_id = self.next_id
            self.next_id += 1
            waiter = _Waiter()
            self.waiters[job_id] = waiter
            job["id"] = job_id
            try:
                write_frame(self.in_w, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError as exc:
                self.waiters.pop(job_id, None)
                self.dead = True
                self.death = self.death or f"its job pipe is closed ({exc})"
                raise _ServerGone(self.death) from exc
        return job_id, waiter

    def kill(self, job_id: int) -> None:
        with self.lock:
            if self.dead or self.in_w is None:
                return
            try:
                write_frame(self.in_w, pickle.dumps({"op": "kill", "id": job_id}))
            except OSError:
                pass

    def stop(self, force: bool = False) -> None:
        """Close the job pipe (the server kills its children and exits); kill it if it does not."""
        with self.lock:
            self.dead = True
            self.death = self.death or "stopped"
            in_w, self.in_w = self.in_w, None
        if in_w is not None:
            try:
                os.close(in_w)
            except OSError:
                pass
        self._terminate(force)

    def _terminate(self, force: bool) -> None:
        """The job pipe is closed: wait for the server to exit, kill it if it does not."""
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=0.5 if force else 5.0)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


def _describe_layers(server: _Server, sandbox: SandboxLimits) -> dict[str, bool | str]:
    facts = server.facts
    host = probe_host()
    view = server.view
    net = (facts.get("netns") is not None and host.netns is not None and facts.get("netns") != host.netns)
    hidden = sorted(p for p, h in (facts.get("hidden") or {}).items() if h)
    if facts.get("identity_switch"):
        user: bool | str = "nobody (65534), no capabilities"
        if not server.nobody_ok:
            user += (" (nobody cannot read all of the Python installation here: imports not done by the "
                     "server may fail)")
        if view.backend in ("bwrap", "unshare") and facts.get("pid_namespace"):
            user += "; run tasks whose path arguments nobody cannot read get root's file access only"
        else:
            user += "; run tasks cannot read path arguments nobody cannot read"
    else:
        user = False  # children keep the server's user (root without capabilities, if root)
    memory = f"{sandbox.memory_mb} MB address space" if sandbox.memory_mb is not None else "no address-space limit"
    pid_ns: bool | str = False
    if facts.get("pid_namespace"):
        pid_ns = "children in their own PID namespace (no host processes, not the server)"
    elif view.backend == "bwrap":
        pid_ns = "shared with the server (bubblewrap)"
    return {
        "backend": view.backend,
        "policy": "AST allow-list + RestrictedPython compile, in the child",
        "process": "fresh fork per job from a warm server; own session and process group; dies with the server",
        "rlimits": (f"{memory}, CPU seconds, file size 0, no core dumps, 64 open files"
                    + (", processes" if user or facts.get("euid") != 0 else "")),
        "wall_clock_kill": "process group at the timeout; strays in the PID namespace when idle",
        "clean_environment": "server started with only: " + ", ".join(facts.get("env_keys", [])),
        "network": (f"new network namespace (interfaces: {', '.join(facts.get('interfaces') or []) or 'none'})"
                    if net else False),
        "read_only_root": bool(facts.get("root_read_only")),
        "hidden_dirs": ", ".join(hidden) if hidden else False,
        "scratch": (f"{facts.get('scratch')}/job-<id> (private, per job)" if facts.get("scratch") else False),
        "pid_namespace": pid_ns,
        "user": user,
        "no_new_privs": True,
        "capabilities": "none (bounding set emptied)" if facts.get("euid") == 0 else "none",
        "result_reader": "restricted unpickler, results up to " + f"{sandbox.max_result_bytes >> 20} MB",
    }
