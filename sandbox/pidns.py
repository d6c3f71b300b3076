"""The PID namespace of the children: a reaper as its PID 1, and the kill of every process left in it.

Guarantees: ``start_pid_namespace`` returns None (with a note) where the namespace is not permitted; once
it succeeded every later fork of the server lands inside, and the reaper kills everything but itself
when the server (from outside the namespace) sends SIGUSR1, acknowledging on a pipe. Signals sent from
inside the namespace are ignored by the reaper.
"""
from __future__ import annotations

import ctypes
import os
import signal

from lossforge.sandbox.mounts import _mount_fresh_proc
from lossforge.sandbox.syscalls import CLONE_NEWPID, PR_SET_PDEATHSIG, libc, prctl


def start_pid_namespace(notes: list[str]) -> tuple[int, int] | None:
    """``unshare(CLONE_NEWPID)`` and fork the namespace's reaper (its PID 1); every later fork of the
    server lands inside. Returns (reaper pid in the server's numbering, read end of the reaper's
    acknowledgement pipe), or None where not permitted."""
    if libc().unshare(ctypes.c_int(CLONE_NEWPID)) == -1:
        notes.append(f"no PID namespace for the children: unshare(CLONE_NEWPID): {os.strerror(ctypes.get_errno())}")
        return None
    status_r, status_w = os.pipe()
    ack_r, ack_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - PID 1 of the namespace
        try:
            os.close(status_r)
            os.close(ack_r)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            try:
                _mount_fresh_proc()
                os.write(status_w, b"P")
            except OSError as exc:
                os.write(status_w, b"E" + str(exc).encode()[:300])
            os.close(status_w)
            _reaper_loop(ack_w)
        finally:
            os._exit(0)
    os.close(status_w)
    os.close(ack_w)
    status = read_until_eof(status_r)
    os.close(status_r)
    if not status.startswith(b"P"):
        notes.append("the children's /proc is the server's: " + status[1:].decode(errors="replace"))
    return pid, ack_r


def read_until_eof(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reaper_loop(ack_fd: int) -> None:  # pragma: no cover - PID 1 of the children's namespace
    """Reap orphans; on SIGUSR1 from outside the namespace (the server: ``si_pid`` 0) kill every other
    process in it and acknowledge on ``ack_fd``. Signals from inside the namespace are ignored."""
    os.closerange(3, ack_fd)
    os.closerange(ack_fd + 1, 1 << 16)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGUSR1})
    while True:
        info = signal.sigwaitinfo({signal.SIGCHLD, signal.SIGUSR1})
        if info.si_signo == signal.SIGUSR1 and info.si_pid == 0:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            os.write(ack_fd, b"k")
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
