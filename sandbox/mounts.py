"""Mount helpers: the "unshare" backend's view (``apply_unshare``) and the children's fresh ``/proc``.

Guarantees: ``apply_unshare`` runs in the server before anything else and returns notes on the steps that
failed instead of raising for them (the layer facts measured afterwards say what is in effect);
``_mount_fresh_proc`` leaves ``/proc/sys`` and the other writable parts of ``/proc`` read-only.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

from lossforge.sandbox.syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    _check,
    libc,
    mount,
    mount_setattr,
    move_mount,
    open_tree,
)


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


def _mount_fresh_proc() -> None:
    """A /proc for the current PID namespace, with /proc/sys, sysrq-trigger, irq, bus and fs read-only
    (as bubblewrap does): root without capabilities could otherwise write most sysctls."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for sub in ("sys", "sysrq-trigger", "irq", "bus", "fs"):
        path = f"/proc/{sub}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount_setattr(path, True, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
