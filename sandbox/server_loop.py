"""The server loop: the host channel, one forked child per job, and the kill of what a job leaves.

``ServerState`` reads the host's frames (``job``, ``kill``, ``exit``), forks one ``child._child`` per job,
forwards the bytes a child wrote (at most its ``max_result_bytes``; never unpickled here) or its exit
status, kills a job's process group when it ends or at its deadline, and, once no job is running,
every process a job left behind (through the PID namespace's reaper, or as a subreaper).
"""
from __future__ import annotations

import os
import pickle
import selectors
import shutil
import signal
import sys
import time
from typing import Any

from lossforge.sandbox.child import _child
from lossforge.sandbox.wire import HEADER, write_frame


def _children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


class _Job:
    __slots__ = ("id", "pid", "pidfd", "rfd", "buf", "expected", "limit", "deadline", "answered", "killed",
                 "scratch", "exited")

    def __init__(self, job_id: int, pid: int, pidfd: int, rfd: int, limit: int, deadline: float, scratch: str):
        self.id = job_id
        self.pid = pid
        self.pidfd = pidfd
        self.rfd: int | None = rfd
        self.buf = bytearray()
        self.expected: int | None = None
        self.limit = limit
        self.deadline = deadline
        self.answered = False
        self.killed = False
        self.scratch = scratch
        self.exited = False


class ServerState:
    def __init__(self, in_fd: int, out_fd: int, setup: dict[str, Any]) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.setup = setup
        self.jobs: dict[int, _Job] = {}
        self.reaper: int | None = None
        self.reaper_ack: int | None = None
        self.identity_switch = False
        self.default_threads = 1
        self.scratch_root = ""
        self.inbuf = bytearray()
        self.sel = selectors.DefaultSelector()
        self.strays_possible = False
        self.main_loaded = False
        self.pid = os.getpid()

    # -- host channel ------------------------------------------------------------------------------
    def send(self, *message: Any) -> None:
        write_frame(self.out_fd, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def done(self, job: _Job, kind: str, data: Any) -> None:
        if not job.answered:
            job.answered = True
            self.send("done", job.id, kind, data)

    # -- jobs --------------------------------------------------------------------------------------
    def start_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            for entry in job.get("sys_path") or []:
                if entry not in sys.path:
                    sys.path.append(entry)
            if job.get("main") and not self.main_loaded:
                self.main_loaded = True
                _load_main(*job["main"])
            if job["mode"] == "run":
                job["task"], job["args"] = pickle.loads(job.pop("payload"))
        except BaseException as exc:  # noqa: BLE001 - e.g. the task's module does not import here
            self.send("done", job_id, "error",
                      f"the task could not be loaded in the sandbox: {type(exc).__name__}: {exc}"[:2000])
            return
        limits = job["limits"]
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(rfd)
                _child(job, wfd, self)
            finally:
                os._exit(70)
        os.close(wfd)
        job.pop("task", None)
        job.pop("args", None)
        os.set_blocking(rfd, False)
        pidfd = os.pidfd_open(pid)
        deadline = time.monotonic() + float(limits["wall_seconds"]) + 5.0
        entry = _Job(job_id, pid, pidfd, rfd, int(limits.get("max_result_bytes", 64 << 20)), deadline,
                     os.path.join(self.scratch_root, f"job-{job_id}"))
        self.jobs[job_id] = entry
        self.sel.register(rfd, selectors.EVENT_READ, ("out", entry))
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", entry))

    def kill(self, job: _Job) -> None:
        job.killed = True
        for target in (lambda: os.killpg(job.pid, signal.SIGKILL), lambda: os.kill(job.pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass

    def on_output(self, job: _Job) -> None:
        assert job.rfd is not None
        while True:
            try:
                chunk = os.read(job.rfd, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._close_output(job)
                return
            job.buf += chunk
            if job.expected is None and len(job.buf) >= HEADER.size:
                (job.expected,) = HEADER.unpack(job.buf[: HEADER.size])
                if job.expected > job.limit + 4096:
                    self.done(job, "toolarge", job.expected)
                    self.kill(job)
                    self._close_output(job)
                    return
            if job.expected is not None and len(job.buf) >= HEADER.size + job.expected:
                data = bytes(job.buf[HEADER.size: HEADER.size + job.expected])
                job.buf = bytearray()
                self.done(job, "message", data)
                self.kill(job)  # the child is done; take its group (stray descendants) with it
                self._close_output(job)
                return

    def _close_output(self, job: _Job) -> None:
        if job.rfd is not None:
            self.sel.unregister(job.rfd)
            os.close(job.rfd)
            job.rfd = None

    def on_exit(self, job: _Job) -> None:
        try:
            _, status = os.waitpid(job.pid, 0)
        except ChildProcessError:
            status = 0
        self.sel.unregister(job.pidfd)
        os.close(job.pidfd)
        job.exited = True
        if job.rfd is not None and not job.answered:
            self.on_output(job)  # whatever it wrote before it died
        self._close_output(job)
        if not job.answered:
            info: dict[str, Any] = {"code": None, "signal": None, "killed": job.killed}
            if os.WIFSIGNALED(status):
                info["signal"] = os.WTERMSIG(status)
            else:
                info["code"] = os.waitstatus_to_exitcode(status)
            self.done(job, "exit", info)
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except OSError:
            pass
        self.strays_possible = True
        shutil.rmtree(job.scratch, ignore_errors=True)
        del self.jobs[job.id]
        if not self.jobs:
            self.kill_strays()

    def kill_strays(self) -> None:
        """No job is running: kill what is left of the jobs (descendants that left their process group
        with ``setsid``). With a PID namespace: every process in it but its reaper (the reaper's
        ``kill(-1)``). Without: the server is a subreaper, so orphans become its children; kill those
        it did not fork itself, until none is left."""
        if not self.strays_possible:
            return
        self.strays_possible = False
        if self.reaper is not None:
            try:
                others = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
            except OSError:
                others = ["?"]
            if not others:
                return
            try:
                os.kill(self.reaper, signal.SIGUSR1)
            except OSError:
                return
            # Wait for the reaper's kill(-1) to have been sent before the next job's fork.
            import select

            if self.reaper_ack is not None and select.select([self.reaper_ack], [], [], 2.0)[0]:
                os.read(self.reaper_ack, 64)
            return
        me = os.getpid()
        for _ in range(100):
            running = {job.pid for job in self.jobs.values()}
            strays = [pid for pid in _children_of(me) if pid not in running]
            if not strays:
                return
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for pid in strays:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            time.sleep(0.005)

    def handle(self, message: dict[str, Any]) -> bool:
        op = message.get("op")
        if op == "job":
            self.start_job(message)
        elif op == "kill":
            job = self.jobs.get(message["id"])
            if job is not None:
                self.kill(job)
        elif op == "exit":
            return False
        return True

    def on_host(self) -> bool:
        try:
            chunk = os.read(self.in_fd, 1 << 20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.inbuf += chunk
        while len(self.inbuf) >= HEADER.size:
            (size,) = HEADER.unpack(self.inbuf[: HEADER.size])
            if len(self.inbuf) < HEADER.size + size:
                break
            data = bytes(self.inbuf[HEADER.size: HEADER.size + size])
            del self.inbuf[: HEADER.size + size]
            if not self.handle(pickle.loads(data)):
                return False
        return True

    def loop(self) -> None:
        os.set_blocking(self.in_fd, False)
        self.sel.register(self.in_fd, selectors.EVENT_READ, ("host", None))
        while True:
            now = time.monotonic()
            timeout = None
            if self.jobs:
                timeout = max(0.0, min(j.deadline for j in self.jobs.values()) - now)
            for key, _ in self.sel.select(timeout):
                what, job = key.data
                if what == "host":
                    if not self.on_host():
                        return
                elif what == "out":
                    if job.rfd is not None:
                        self.on_output(job)
                elif what == "exit":
                    if not job.exited:
                        self.on_exit(job)
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if now > job.deadline and not job.killed:
                    self.done(job, "timeout", None)
                    self.kill(job)

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            self.kill(job)
        if self.reaper is not None:
            try:
                os.kill(self.reaper, signal.SIGKILL)
            except OSError:
                pass


def _load_main(spec_name: str | None, path: str | None) -> None:
    """Make the host's main module importable as ``__mp_main__`` (tasks defined in it pickle as
    ``__main__.name``), as multiprocessing does for its spawn/forkserver children."""
    import runpy
    import types

    if spec_name and spec_name != "__main__" and not spec_name.endswith(".__main__"):
        namespace = runpy.run_module(spec_name, run_name="__mp_main__", alter_sys=True)
    elif path and os.path.exists(path):
        namespace = runpy.run_path(path, run_name="__mp_main__")
    else:
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = module
    sys.modules["__main__"] = module
