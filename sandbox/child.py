"""One job's child: its isolation (before it touches the candidate) and the job itself.

``_child`` is the entry point of every forked child (see ``server_loop.ServerState.start_job``): it
isolates itself (``_isolate_child``: own session and process group, ``PR_SET_PDEATHSIG``, inherited
descriptors closed, stdin/out/err on ``/dev/null``, a private scratch directory, resource limits, the
capability bounding set emptied and the switch of identity in ``_become``, secret-like environment
variables removed), runs the check suite or the task on the candidate, and writes exactly one frame
(a pickled ``(kind, payload, traceback tail)``) to its result pipe, then exits. ``state`` is the
server's ``ServerState`` (read only: pid, identity switch, reaper, scratch root, thread count).
"""
from __future__ import annotations

import ctypes
import errno
import os
import pickle
import re
import resource
import signal
import traceback
from typing import Any

from lossforge.sandbox.syscalls import (
    CAP_SETGID,
    CAP_SETUID,
    NOBODY,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    PR_SET_SECUREBITS,
    SECBIT_KEEP_CAPS_LOCKED,
    SECBIT_NO_SETUID_FIXUP,
    SECBIT_NO_SETUID_FIXUP_LOCKED,
    SECBIT_NOROOT,
    SECBIT_NOROOT_LOCKED,
    _capset,
    libc,
    prctl,
)
from lossforge.sandbox.wire import write_frame

#: Environment variable names removed in every child (the server's environment is already clean).
SECRET_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def _set_limit(which: int, value: int, hard_extra: int = 0) -> None:
    """Lower soft and hard limit to ``value`` (hard ``value + hard_extra``, e.g. CPU: SIGXCPU first)."""
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    new_hard = value + hard_extra
    if hard != resource.RLIM_INFINITY:
        new_hard = max(value, min(new_hard, hard))
    try:
        resource.setrlimit(which, (value, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(which, (value, hard))


def _drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP; a no-op without it)."""
    for cap in range(64):
        if libc().prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)) == -1 and ctypes.get_errno() == errno.EINVAL:
            break


def _become(identity: str) -> None:
    """Switch the child to ``identity``, for good, with no capability left:

    * "nobody": uid/gid 65534, no supplementary groups.
    * "nobody-rootfs": uid/gid 65534 for everything (signals, process limits, /proc, sysctls) except
      file access (fsuid/fsgid 0), for tasks that read host paths only root can read. Only used inside a
      read-only view with a private /dev and a PID namespace (the host decides).
    * "root-nocaps": uid 0 without any capability (the host cannot switch users).
    * "same": the server's user, minus every capability (inside a user namespace it has them all).
    Then ``no_new_privs``, so no exec can gain anything back.
    """
    _drop_bounding_set()  # a no-op without CAP_SETPCAP
    if identity in ("nobody", "nobody-rootfs"):
        if identity == "nobody-rootfs":
            prctl(PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        if identity == "nobody-rootfs":
            keep = (1 << CAP_SETUID) | (1 << CAP_SETGID)
            _capset(keep, keep)
            libc().setfsgid(0)
            libc().setfsuid(0)
            _capset(0, 0)
            prctl(PR_SET_KEEPCAPS, 0)
            if libc().setfsuid(-1) != 0:  # returns the current fsuid
                raise OSError("setfsuid(0) did not take effect")
    elif identity == "root-nocaps":
        try:
            prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP
                  | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED)
        except OSError:
            pass
    # Whatever the identity, no capability is left: this also covers "same" inside a user namespace
    # (the unprivileged unshare backend), where the server holds every capability over its own mount,
    # network and PID namespaces and a child could otherwise unmount the hidden directories.
    _capset(0, 0)
    try:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError:
        pass


def _isolate_child(job: dict[str, Any], result_fd: int, state: Any) -> None:
    limits = job["limits"]
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1 and state.pid != 1:  # the server died before prctl took effect
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 16)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)

    identity = job.get("identity", "same")
    if identity in ("nobody", "nobody-rootfs") and not state.identity_switch:
        identity = "root-nocaps" if os.geteuid() == 0 else "same"
    if identity == "nobody-rootfs" and state.reaper is None:
        identity = "nobody"  # root file access only with a PID namespace (and the host's view)
    if identity == "root-nocaps" and os.geteuid() != 0:
        identity = "same"
    scratch = os.path.join(state.scratch_root, f"job-{job['id']}")
    os.mkdir(scratch, 0o700)
    if identity == "nobody":
        os.chown(scratch, NOBODY, NOBODY)
    os.chdir(scratch)
    os.environ["HOME"] = scratch
    os.environ["TMPDIR"] = scratch

    if limits.get("memory_bytes") is not None:
        _set_limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    _set_limit(resource.RLIMIT_CPU, max(1, int(limits["cpu_seconds"])), hard_extra=2)
    _set_limit(resource.RLIMIT_FSIZE, int(limits.get("file_bytes", 0)))
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_NOFILE, int(limits.get("open_files", 64)))
    if identity != "root-nocaps" and limits.get("processes") is not None:
        # Counted per user (threads included) across the host: enforced for any user but root.
        _set_limit(resource.RLIMIT_NPROC, int(limits["processes"]))
    _become(identity)
    for name in list(os.environ):
        if SECRET_PATTERN.search(name):
            del os.environ[name]

    import torch

    if job["mode"] == "run":
        torch.set_num_threads(state.default_threads)
    else:
        torch.set_num_threads(1)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _traceback_tail(exc: BaseException, lines: int = 12) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _child(job: dict[str, Any], result_fd: int, state: Any) -> None:  # pragma: no cover - child
    """Entry point of every job's child: writes exactly one frame (a pickled (kind, payload, tail))."""
    message: tuple[Any, ...]
    try:
        _isolate_child(job, result_fd, state)
        mode = job["mode"]
        if mode == "check":
            from lossforge.candidate.checks import run_checks

            message = ("ok", run_checks(job["code"], job["beta"]).model_dump(), "")
        elif mode == "run":
            from lossforge.candidate.namespace import load_candidate
            from lossforge.candidate.policy import PolicyViolation

            try:
                loaded = load_candidate(job["code"])
            except PolicyViolation as v:
                message = ("policy", str(v), "")
            else:
                task, args = job["task"], job["args"]
                message = ("ok", task(loaded.fn, *args), "")
        elif mode == "ping":
            message = ("ok", {"pid": os.getpid(), "uid": os.getuid()}, "")
        else:
            message = ("error", f"unknown mode {mode!r}", "")
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the host
        if _is_oom(exc):
            message = ("oom", f"{type(exc).__name__}: {exc}"[:2000], _traceback_tail(exc))
        else:
            message = ("error", f"{type(exc).__name__}: {exc}"[:4000], _traceback_tail(exc))
    limit = int(job["limits"].get("max_result_bytes", 64 << 20))
    try:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - unpicklable result, or out of memory
            data = pickle.dumps(("error", f"the result could not be sent back: {type(exc).__name__}: {exc}"[:2000],
                                 ""))
        if len(data) > limit:
            data = pickle.dumps(("error", f"the result is too large: {len(data)} bytes pickled, at most {limit} "
                                          "allowed", ""))
        write_frame(result_fd, data)
    finally:
        os._exit(0)
