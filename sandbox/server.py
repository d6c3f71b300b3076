"""The sandbox worker server: one warm Python process that forks one limited child per job.

``lossforge.sandbox.process.ProcessSandbox`` starts this module (``python -I -c`` bootstrap calling
``main``) inside the isolation the host allows (see ``lossforge.sandbox.isolation``): under bubblewrap
(``bwrap --ro-bind / / --unshare-net --unshare-pid ...``), or set up here with ``unshare(2)`` and mount
calls (``backend="unshare"``), or as a plain process (``backend="none"``). It talks to the host over two
pipes with length-prefixed frames (``HEADER`` then the bytes).

What it guarantees
------------------
* Start-up, in this order, before any job: the ``unshare`` backend's namespaces and read-only view (when
  asked); a PID namespace for the children with a small reaper as its PID 1 and a fresh ``/proc`` (where
  permitted); the facts about the layers actually in effect (network namespace and interfaces,
  read-only root, hidden directories, identity switch, PID namespace, capabilities, ``no_new_privs``),
  measured here and sent to the host in the ``hello`` frame; then ``torch`` and the check suite are
  imported and warmed once (a trusted known-good loss), and ``gc.freeze()`` keeps the fork cheap.
* Jobs: the host sends pickled dicts (trusted: they come from the host). ``mode`` is "check", "run" or
  "ping"; a run job's ``task`` and ``args`` are unpickled here (the task is a reference to a
  module-level function chosen by the host, imported once and kept warm); candidate code is only ever a
  string. Each job runs in a fresh ``fork()`` (see ``_child``) that writes one pickled message to its
  own pipe; the server never unpickles anything a child wrote: it forwards the bytes (at most
  ``limits["max_result_bytes"]``) or the child's exit status. After a job ends, its process group is
  killed, and once no job is running any process left in the children's PID namespace (a descendant
  that left its group with ``setsid``) is killed too.
* A child, before it touches the candidate: own session and process group; ``PR_SET_PDEATHSIG``
  (dies with the server); every inherited descriptor closed but its result pipe; stdin/out/err on
  ``/dev/null``; a private scratch directory as cwd; resource limits (address space, CPU seconds, file
  size 0, no core, open files, processes); the capability bounding set emptied and a switch to
  ``nobody`` (65534), or, where a task needs host files only root can read and the server has a PID
  namespace, nobody with root's file access only (fsuid 0), then ``no_new_privs`` (see ``_become``);
  secret-like environment variables removed.
* The server exits when the host closes its pipe (the host died or closed the sandbox), killing every
  child; children die with it (``PR_SET_PDEATHSIG``, and the PID namespace when its reaper dies).

What it does not guarantee
--------------------------
* The server itself is trusted code with the privileges the backend leaves it (root with a few
  capabilities under bubblewrap); only the children run candidate code.
* A descendant that escaped its process group lives until no job is running (then it is killed).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pickle
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any

HEADER = struct.Struct("!Q")

#: Environment variable names removed in every child (the server's environment is already clean).
SECRET_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)

NOBODY = 65534
SCRATCH_ROOT_NAME = "lossforge-scratch"

# Linux constants (the same on every architecture for the calls used here).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0) -> int:
    return _check(libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                               ctypes.c_ulong(0)), f"prctl({option})")


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


# --------------------------------------------------------------------------------------------------
# Mount helpers (the "unshare" backend and the children's /proc)
# --------------------------------------------------------------------------------------------------


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def open_tree(path: str) -> int:
    return _check(libc().syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(),
                                 ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)),
                  f"open_tree {path}")


def move_mount(fd: int, target: str) -> None:
    _check(libc().syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(),
                          ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")


def mount_setattr(path: str, recursive: bool, attr_set: int = 0, attr_clr: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(libc().syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(),
                          ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                          ctypes.c_size_t(ctypes.sizeof(attr))), f"mount_setattr {path}")


def _make_mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def apply_unshare(setup: dict[str, Any]) -> list[str]:
    """The "unshare" backend, done by the server itself before anything else: new mount, network, IPC
    and UTS namespaces (in a new user namespace when not root), the whole tree read-only, the hidden
    roots (``/tmp``, ``/home``, ...) replaced by empty tmpfs with the exposed paths bound back read-only,
    a minimal ``/dev`` and a writable private ``/tmp`` for the scratch directories. Returns notes on
    steps that failed (the layer facts measured afterwards say what is in effect)."""
    notes: list[str] = []
    os.umask(0o022)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    _check(libc().unshare(ctypes.c_int(flags)), "unshare")
    if flags & CLONE_NEWUSER:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    hidden = [p for p in setup.get("hide_dirs", []) if os.path.isdir(p) and not os.path.islink(p)]
    if "/dev" not in hidden:
        hidden.append("/dev")
    exposed = [p for p in setup.get("expose", []) if os.path.exists(p)]
    under = [p for p in exposed if any(p == h or p.startswith(h.rstrip("/") + "/") for h in hidden)]
    is_dir = {p: os.path.isdir(p) for p in under}
    clones: list[tuple[str, int]] = []
    for path in under:
        try:
            clones.append((path, open_tree(path)))
        except OSError as exc:
            notes.append(str(exc))
    dev_clones = []
    for name in _DEV_NODES:
        try:
            dev_clones.append((name, open_tree(f"/dev/{name}")))
        except OSError as exc:
            notes.append(str(exc))
    for root in hidden:
        mount("tmpfs", root, "tmpfs", MS_NOSUID | (0 if root == "/dev" else MS_NODEV), "mode=0755")
    for name, fd in dev_clones:
        _make_mountpoint(f"/dev/{name}", False)
        move_mount(fd, f"/dev/{name}")
        os.close(fd)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{link}")
    os.makedirs("/dev/shm", mode=0o755, exist_ok=True)
    for path, fd in sorted(clones, key=lambda c: c[0].count("/")):
        try:
            _make_mountpoint(path, is_dir[path])
        except OSError:
            pass
        try:
            move_mount(fd, path)
        except OSError as exc:
            notes.append(str(exc))
        os.close(fd)
    for path in setup.get("hide_files", []):
        try:
            if os.path.isfile(path):
                mount("/dev/null", path, None, MS_BIND)
        except OSError as exc:
            notes.append(str(exc))
    mount_setattr("/", True, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    try:
        mount_setattr("/dev", True, attr_set=MOUNT_ATTR_NOSUID)  # device binds stay usable
    except OSError as exc:
        notes.append(str(exc))
    if "/tmp" in hidden:
        mount_setattr("/tmp", False, attr_clr=MOUNT_ATTR_RDONLY)
    return notes


# --------------------------------------------------------------------------------------------------
# PID namespace for the children
# --------------------------------------------------------------------------------------------------


def _mount_fresh_proc() -> None:
    """A /proc for the current PID namespace, with /proc/sys, sysrq-trigger, irq, bus and fs read-only
    (as bubblewrap does): root without capabilities could otherwise write most sysctls."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for sub in ("sys", "sysrq-trigger", "irq", "bus", "fs"):
        path = f"/proc/{sub}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount_setattr(path, True, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)


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


# --------------------------------------------------------------------------------------------------
# Facts about the layers in effect (measured inside)
# --------------------------------------------------------------------------------------------------


def _capabilities() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return -1


def _probe_identity_switch() -> bool:
    """Can a child become nobody? (fork a tiny probe now, before torch is imported)"""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            code = 0 if os.getuid() == NOBODY else 1
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def measure_facts(setup: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {"pid": os.getpid(), "uid": os.getuid(), "euid": os.geteuid()}
    try:
        facts["netns"] = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        facts["netns"] = None
    try:
        facts["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        facts["interfaces"] = None
    try:
        facts["mntns"] = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        facts["mntns"] = None
    probe = "/.lossforge-ro-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    except OSError as exc:
        facts["root_read_only"] = exc.errno == errno.EROFS
    else:
        os.close(fd)
        os.unlink(probe)
        facts["root_read_only"] = False
    hidden = {}
    for path, (dev, ino) in setup.get("host_ids", {}).items():
        try:
            st = os.stat(path)
            hidden[path] = (st.st_dev, st.st_ino) != (dev, ino)
        except OSError:
            hidden[path] = True
    facts["hidden"] = hidden
    facts["capabilities"] = _capabilities()
    try:
        facts["no_new_privs"] = bool(prctl(PR_GET_NO_NEW_PRIVS))
    except OSError:
        facts["no_new_privs"] = False
    facts["env_keys"] = sorted(os.environ)
    facts["identity_switch"] = _probe_identity_switch()
    return facts


# --------------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------------


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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


CAP_SETGID = 6
CAP_SETUID = 7
PR_SET_KEEPCAPS = 8


def _capset(effective: int, permitted: int) -> None:
    """Set this thread's capabilities (caps 0..31 are enough for the ones kept here; 32..63 cleared)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective, data[0].permitted = effective, permitted
    _check(libc().capset(ctypes.byref(header), data), "capset")


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


def _isolate_child(job: dict[str, Any], result_fd: int, state: "ServerState") -> None:
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


def _child(job: dict[str, Any], result_fd: int, state: "ServerState") -> None:  # pragma: no cover - child
    """Entry point of every job's child: writes exactly one frame (a pickled (kind, payload, tail))."""
    message: tuple[Any, ...]
    try:
        _isolate_child(job, result_fd, state)
        mode = job["mode"]
        if mode == "check":
            from lossforge.candidate.checks import run_checks

            message = ("ok", run_checks(job["code"], job["beta"]).model_dump(), "")
        elif mode == "run":
            from lossforge.candidate.policy import PolicyViolation, load_candidate

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


# --------------------------------------------------------------------------------------------------
# The server loop
# --------------------------------------------------------------------------------------------------


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


def _warm_up() -> int:
    """Import torch and the check suite and run the suite once on a known-good loss (trusted code), so
    every child starts with torch's lazy initialisation done; returns torch's default thread count."""
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from lossforge.candidate.checks import run_checks
    import lossforge.candidate.policy  # noqa: F401

    run_checks(
        "import torch.nn.functional as F\n\n"
        "def warm(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
        "    return -F.logsigmoid(beta * logits)\n", 0.1)
    return default_threads


def main(in_fd: int, out_fd: int, setup_fd: int) -> None:
    """Run the server: ``setup_fd`` carries one frame with the pickled setup dict (closed after)."""
    setup = pickle.loads(read_frame(setup_fd, 1 << 24))
    os.close(setup_fd)
    notes: list[str] = []
    host_pid = setup.get("host_pid")
    if setup.get("backend") in ("unshare", "none"):
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the host (its launcher thread lives on)
        except OSError:
            pass
        if host_pid and os.getppid() != host_pid:
            os._exit(1)
    if setup.get("backend") == "unshare":
        try:
            notes += apply_unshare(setup)
        except OSError as exc:
            notes.append(f"unshare backend failed: {exc}")
    for entry in reversed(setup.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    state = ServerState(in_fd, out_fd, setup)
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        pass
    facts = measure_facts(setup)
    state.identity_switch = facts["identity_switch"]
    if setup.get("pid_namespace", True):
        started = start_pid_namespace(notes)
        if started is not None:
            state.reaper, state.reaper_ack = started
    facts["pid_namespace"] = state.reaper is not None
    scratch_base = "/tmp" if facts["hidden"].get("/tmp") else None
    if scratch_base is None:
        import tempfile

        scratch_base = tempfile.gettempdir()
        _remove_stale_scratch(scratch_base)
        state.scratch_root = tempfile.mkdtemp(prefix=f"{SCRATCH_ROOT_NAME}-{os.getpid()}-", dir=scratch_base)
    else:
        state.scratch_root = os.path.join(scratch_base, SCRATCH_ROOT_NAME)
        os.makedirs(state.scratch_root, exist_ok=True)
    os.chmod(state.scratch_root, 0o711)
    facts["scratch"] = state.scratch_root
    try:
        state.default_threads = _warm_up()
    except BaseException as exc:  # noqa: BLE001
        notes.append(f"warm-up failed: {type(exc).__name__}: {exc}")
        state.send("hello", facts, notes, False)
        return
    import gc

    gc.collect()
    gc.freeze()  # children do not touch (copy) the warm objects' pages when their gc runs
    facts["notes"] = notes
    state.send("hello", facts, notes, True)
    try:
        state.loop()
    finally:
        state.shutdown()
        if not facts["hidden"].get("/tmp"):
            shutil.rmtree(state.scratch_root, ignore_errors=True)


def _remove_stale_scratch(base: str) -> None:
    """Without a private /tmp the scratch root is a host directory named after its server's pid; remove
    those of servers that are gone (a server killed with its host cannot clean up after itself)."""
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for name in entries:
        parts = name.split("-")
        if not name.startswith(SCRATCH_ROOT_NAME + "-") or len(parts) < 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
            continue  # its server is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


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


def bootstrap(argv: list[str]) -> None:
    """``python -I -c 'from lossforge.sandbox.server import bootstrap; bootstrap(...)'`` entry."""
    in_fd, out_fd, setup_fd = (int(a) for a in argv[:3])
    try:
        main(in_fd, out_fd, setup_fd)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def socket_bootstrap(path: str) -> None:
    """Entry of the Docker backend (``lossforge.sandbox.docker_backend``): the server runs as PID 1 of
    its container and talks to the host over the Unix socket at ``path`` (a directory bound from the
    host) instead of pipes. As PID 1 it cannot be killed from inside the container (the kernel drops
    signals from the namespace to its init unless it installed a handler, so SIGINT goes back to the
    default), and non-dumpable, so a child of the same user cannot ptrace it or read its memory."""
    if os.getpid() == 1:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        pass
    # Two connections, jobs in and messages out: separate open files, so making the job side
    # non-blocking (the loop's selector) leaves the message side blocking.
    fds = []
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        fds.append(sock.detach())
    try:
        main(fds[0], fds[1], os.dup(fds[0]))
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":  # python -m lossforge.sandbox.server IN_FD OUT_FD SETUP_FD
    bootstrap(sys.argv[1:])
