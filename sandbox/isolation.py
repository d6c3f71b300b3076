"""Which isolation layers this host allows, and the sandbox's view of the file system.

``ProcessSandbox`` runs its worker server (``lossforge.sandbox.server``) under one of three backends,
chosen once per process by ``choose_backend("auto")``:

* ``"bwrap"`` (bubblewrap found and working): the server is started as
  ``bwrap --unshare-net --unshare-pid --unshare-ipc --unshare-uts --new-session --die-with-parent
  --ro-bind / / --dev /dev --proc /proc --tmpfs <each hidden dir> --ro-bind <each exposed path> ...``
  with, as root, every capability dropped except the few the server needs to set up its children.
* ``"unshare"`` (no bubblewrap, but ``unshare(2)`` works: as root, or unprivileged where user
  namespaces are allowed): the server builds the same view itself (``server.apply_unshare``).
* ``"none"``: a plain process; the file-system, network and PID layers are absent, and ``layers()``
  says so.

The view (``View``): the whole host file system read-only, except ``HIDE_DIRS`` (``/tmp``, ``/var``,
``/run``, ``/root``, ``/home``, ``/mnt``, ``/media``, ``/srv``, ``/etc/ssl/private``), which are empty
tmpfs, and ``HIDE_FILES`` (``/etc/shadow`` ...), which read as empty. Paths the server needs (the
Python installation, every ``sys.path`` entry, the lossforge package, ``expose=`` paths given to
``ProcessSandbox`` and the path arguments of ``run`` tasks) are bound back read-only inside hidden dirs.
``/tmp`` inside is private and writable by the server only; each job gets its own directory there.

Identity: children run as ``nobody`` (65534) wherever the server can switch (the host is root). A ``run``
job whose path arguments nobody cannot read (``nobody_can_read``; e.g. a cache under a 0700 directory)
runs as nobody with root's *file access* only (fsuid 0: it reads what root can read in the read-only
view; signals, process limits, /proc and sysctls still see uid 65534), and only with the bwrap or
unshare backend, whose view has a private /dev and whose children have their own PID namespace. Without
the right to switch, children keep the host user's identity (root: without any capability).

What it does not guarantee
--------------------------
* Detection is a probe at first use, cached for the process; a host that changes (bubblewrap installed
  later) is seen by a new process.
* The view hides by directory; files elsewhere that the host user can read stay readable to a child
  running as that user (``"same"`` identity) or as root.
"""
from __future__ import annotations

import glob
import os
import platform
import shutil
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossforge.sandbox.child import SECRET_PATTERN
from lossforge.sandbox.syscalls import NOBODY

__all__ = [
    "BACKENDS",
    "HIDE_DIRS",
    "HIDE_FILES",
    "HostFacts",
    "View",
    "probe_host",
    "choose_backend",
    "base_view",
    "nobody_can_read",
    "clean_environment",
    "server_command",
]

BACKENDS = ("bwrap", "unshare", "none")

#: Directories replaced by an empty tmpfs inside the sandbox (paths the server needs are bound back).
HIDE_DIRS = ("/tmp", "/var", "/run", "/root", "/home", "/mnt", "/media", "/srv", "/etc/ssl/private")
#: Files that read as empty inside the sandbox (the globs are expanded on the host).
HIDE_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
              "/etc/ssh/ssh_host_*_key", "/etc/security/opasswd")
#: Environment variables passed to the server (values whose names look like secrets never are).
ENV_ALLOWED = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS")
#: Capabilities the server keeps under bubblewrap as root (its children drop all of them).
SERVER_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_ADMIN", "CAP_KILL", "CAP_CHOWN",
                       "CAP_DAC_OVERRIDE", "CAP_FOWNER")



# --------------------------------------------------------------------------------------------------
# Host probes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What this host allows (probed once per process)."""

    root: bool
    bwrap: str | None
    bwrap_works: bool
    bwrap_error: str
    unshare_works: bool
    unshare_error: str
    user_namespaces: bool
    user_namespaces_detail: str
    kernel: str
    netns: int | None
    host_ids: dict[str, tuple[int, int]] = field(default_factory=dict)


_PROBE_LOCK = threading.Lock()
_host_facts: HostFacts | None = None

_UNSHARE_PROBE = r"""
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
flags = 0x00020000 | 0x40000000   # CLONE_NEWNS | CLONE_NEWNET
if os.geteuid() != 0:
    flags |= 0x10000000           # CLONE_NEWUSER
if libc.unshare(flags) != 0:
    print("unshare:", os.strerror(ctypes.get_errno())); sys.exit(1)
if flags & 0x10000000:
    uid, gid = os.getuid(), os.getgid()
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/uid_map", "w").write(f"{uid} {uid} 1")
    open("/proc/self/gid_map", "w").write(f"{gid} {gid} 1")
if libc.mount(None, b"/", None, ctypes.c_ulong(0x4000 | 0x40000), None) != 0:
    print("mount --make-rprivate /:", os.strerror(ctypes.get_errno())); sys.exit(1)
class Attr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "prop", "userns")]
attr = Attr(1, 0, 0, 0)
if libc.syscall(442, -100, b"/", ctypes.c_uint(0x8000), ctypes.byref(attr), ctypes.c_size_t(32)) != 0:
    print("mount_setattr(/, rdonly):", os.strerror(ctypes.get_errno())); sys.exit(1)
if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", ctypes.c_ulong(0x2 | 0x4), b"mode=0755") != 0:
    print("mount tmpfs:", os.strerror(ctypes.get_errno())); sys.exit(1)
sys.exit(0)
"""

_USERNS_PROBE = r"""
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
sys.exit(0 if libc.unshare(0x10000000) == 0 else 1)
"""


def _run_probe(argv: list[str], env: dict[str, str] | None = None) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    out = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, out[-300:]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def probe_host(refresh: bool = False) -> HostFacts:
    """Probe bubblewrap, ``unshare`` and user namespaces on this host (cached for the process)."""
    global _host_facts
    with _PROBE_LOCK:
        if _host_facts is not None and not refresh:
            return _host_facts
        env = clean_environment()
        bwrap = shutil.which("bwrap")
        bwrap_works, bwrap_error = False, "bubblewrap (bwrap) is not installed"
        if bwrap:
            # The interpreter may live under /tmp (a venv in a checkout there): bind it back after the tmpfs.
            python_dirs = sorted({sys.prefix, os.path.dirname(os.path.realpath(sys.executable))})
            rebind = [arg for path in python_dirs for arg in ("--ro-bind-try", path, path)]
            bwrap_works, bwrap_error = _run_probe(
                [bwrap, "--die-with-parent", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/", "--dev",
                 "/dev", "--proc", "/proc", "--tmpfs", "/tmp", *rebind, "--", sys.executable, "-I", "-c", "pass"], env)
        unshare_works, unshare_error = _run_probe([sys.executable, "-I", "-c", _UNSHARE_PROBE], env)
        userns_ok, _ = _run_probe([sys.executable, "-I", "-c", _USERNS_PROBE], env)
        details = []
        for path in ("/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/unprivileged_userns_clone",
                     "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"):
            value = _read(path)
            if value is not None:
                details.append(f"{os.path.basename(path)}={value}")
        try:
            netns: int | None = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            netns = None
        host_ids = {}
        for path in HIDE_DIRS:
            try:
                st = os.stat(path)
                host_ids[path] = (st.st_dev, st.st_ino)
            except OSError:
                pass
        _host_facts = HostFacts(
            root=os.geteuid() == 0, bwrap=bwrap, bwrap_works=bwrap_works, bwrap_error="" if bwrap_works else bwrap_error,
            unshare_works=unshare_works, unshare_error="" if unshare_works else unshare_error,
            user_namespaces=userns_ok, user_namespaces_detail=", ".join(details), kernel=platform.release(),
            netns=netns, host_ids=host_ids)
        return _host_facts


def choose_backend(isolation: str = "auto") -> str:
    """The backend for ``isolation`` ("auto", "bwrap", "unshare" or "none"); ``auto`` also reads the
    ``LOSSFORGE_SANDBOX_ISOLATION`` environment variable. Raises ``ValueError`` when the backend asked
    for is not available here (with the reason)."""
    if isolation == "auto":
        isolation = os.environ.get("LOSSFORGE_SANDBOX_ISOLATION", "auto") or "auto"
    if isolation not in ("auto",) + BACKENDS:
        raise ValueError(f"unknown isolation {isolation!r}; use one of auto, {', '.join(BACKENDS)}")
    if isolation == "none":
        return "none"
    facts = probe_host()
    if isolation == "bwrap":
        if not facts.bwrap_works:
            raise ValueError(f"bubblewrap is not usable here: {facts.bwrap_error}")
        return "bwrap"
    if isolation == "unshare":
        if not facts.unshare_works:
            raise ValueError(f"unshare is not usable here: {facts.unshare_error}")
        return "unshare"
    if facts.bwrap_works:
        return "bwrap"
    if facts.unshare_works:
        return "unshare"
    return "none"


# --------------------------------------------------------------------------------------------------
# The view
# --------------------------------------------------------------------------------------------------


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class View:
    """What the server sees: ``hide_dirs`` emptied, ``hide_files`` blanked, ``expose`` bound back.

    The ``"docker"`` backend sees only its image and ``expose`` (bound read-only); ``options`` holds
    its settings (``lossforge.sandbox.docker_backend.DockerSettings``), part of the server's identity."""

    backend: str
    hide_dirs: tuple[str, ...]
    hide_files: tuple[str, ...]
    expose: tuple[str, ...]
    options: Any = None

    def with_paths(self, paths: list[str]) -> "View":
        """This view with ``paths`` (and their real paths) exposed too."""
        return View(self.backend, self.hide_dirs, self.hide_files, _normalise(list(self.expose) + paths,
                                                                              self.hide_dirs), self.options)

    def covers(self, path: str) -> bool:
        """Whether ``path`` is visible in this view (not inside a hidden dir, or inside an exposed path)."""
        if self.backend == "none":
            return True
        path = os.path.abspath(path)
        if self.backend == "docker":
            return any(_under(path, e) for e in self.expose)
        if not any(_under(path, h) for h in self.hide_dirs):
            return True
        return any(_under(path, e) for e in self.expose)

    def needed(self, path: str) -> list[str]:
        """Paths to expose so that ``path`` (and where it really lives) is visible."""
        out = []
        for p in {os.path.abspath(path), os.path.realpath(path)}:
            if not self.covers(p):
                out.append(p)
        return out


def _normalise(paths: list[str], hide_dirs: tuple[str, ...]) -> tuple[str, ...]:
    """Absolute, existing, real and given forms; not ``/`` nor a hidden dir itself; no path inside
    another; sorted."""
    found: set[str] = set()
    for raw in paths:
        if not raw:
            continue
        for p in {os.path.abspath(raw), os.path.realpath(raw)}:
            if p == "/" or p in hide_dirs or not os.path.exists(p):
                continue
            found.add(p)
    kept = []
    for p in sorted(found, key=lambda s: (s.count("/"), s)):
        if not any(_under(p, k) for k in kept):
            kept.append(p)
    return tuple(sorted(kept))


def _lossforge_root() -> str:
    import lossforge.sandbox

    return str(Path(lossforge.sandbox.__file__).resolve().parent.parent)


def server_sys_path() -> list[str]:
    """The host's ``sys.path`` as the server uses it (``''`` is the host's working directory)."""
    out = []
    for entry in sys.path:
        entry = entry or os.getcwd()
        if os.path.isabs(entry) or "__path_hook__" in entry:
            out.append(entry)
        else:
            out.append(os.path.abspath(entry))
    return out


def base_view(backend: str, expose: tuple[str, ...] = ()) -> View:
    """The default view for ``backend`` with ``expose`` added."""
    hide_dirs: tuple[str, ...] = ()
    hide_files: list[str] = []
    if backend != "none":  # "none" has no view of its own; its expose list only serves nobody_can_read
        hide_dirs = tuple(p for p in HIDE_DIRS if os.path.isdir(p) and not os.path.islink(p))
        for pattern in HIDE_FILES:
            hide_files.extend(p for p in glob.glob(pattern) if os.path.isfile(p))
    needed = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable)),
              _lossforge_root()]
    needed += [p for p in server_sys_path() if "__path_hook__" not in p]
    needed += list(expose)
    return View(backend, hide_dirs, tuple(sorted(hide_files)), _normalise(needed, hide_dirs))


def nobody_can_read(path: str, view: View) -> bool:
    """Whether uid 65534 (not in the owner's group) can read ``path`` inside ``view``: every real
    directory on the way must be searchable by others and the path itself readable. Directories that
    the view creates (inside a hidden dir, above an exposed path) are 0755."""
    path = os.path.abspath(path)
    mounts = [e for e in view.expose if _under(path, e)]
    hidden = any(_under(path, h) for h in view.hide_dirs)
    real_from = "/"
    if hidden and mounts:
        real_from = max(mounts, key=len)
    parts = Path(path).parts
    current = ""
    for i, part in enumerate(parts):
        current = os.path.join(current, part) if current else part
        if not _under(current, real_from) and current != real_from:
            continue  # created by the view: 0755
        try:
            st = os.stat(current)
        except OSError:
            return False
        last = i == len(parts) - 1
        if st.st_uid == NOBODY:
            continue
        if stat.S_ISDIR(st.st_mode):
            if not st.st_mode & stat.S_IXOTH or (last and not st.st_mode & stat.S_IROTH):
                return False
        elif last and not st.st_mode & stat.S_IROTH:
            return False
    return True


def clean_environment() -> dict[str, str]:
    """The server's whole environment: a fixed PATH, HOME and TMPDIR, and ``ENV_ALLOWED`` values from
    the host whose names do not look like secrets. Nothing else of the host's environment enters."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp",
           "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    for name in ENV_ALLOWED:
        if name in os.environ and not SECRET_PATTERN.search(name):
            env[name] = os.environ[name]
    return env


_BOOT = ("import sys; sys.path[:0] = {paths!r}; from lossforge.sandbox.server import bootstrap; "
         "bootstrap(sys.argv[1:])")


def server_command(view: View, fds: tuple[int, int, int]) -> list[str]:
    """The command line that starts the worker server in ``view`` with its three pipe descriptors."""
    python = [sys.executable, "-I", "-c", _BOOT.format(paths=server_sys_path()), *(str(fd) for fd in fds)]
    if view.backend != "bwrap":
        return python
    facts = probe_host()
    assert facts.bwrap is not None
    argv = [facts.bwrap, "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--hostname", "lossforge-sandbox", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc"]
    for path in view.hide_dirs:
        argv += ["--tmpfs", path]
    for path in view.hide_files:
        argv += ["--ro-bind", "/dev/null", path]
    made: set[str] = set()
    for path in view.expose:
        roots = [h for h in view.hide_dirs if _under(path, h)]
        if not roots:
            continue
        # Directories above the bound path are created 0755 (bubblewrap would make them 0700), so that
        # nobody can reach what is exposed, and nothing else of the hidden directory appears.
        root = max(roots, key=len)
        parent = os.path.dirname(path)
        chain = []
        while parent != root and _under(parent, root) and parent not in made:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(chain):
            argv += ["--perms", "0755", "--dir", directory]
            made.add(directory)
        argv += ["--ro-bind", path, path]
    argv += ["--chdir", "/"]
    if os.geteuid() == 0:
        argv += ["--cap-drop", "ALL"]
        for cap in SERVER_CAPABILITIES:
            argv += ["--cap-add", cap]
    return argv + ["--", *python]
