"""Facts about the isolation layers in effect, measured inside the server before any job.

``measure_facts`` reports the network namespace and interfaces, the mount namespace, whether the root is
read-only, which hidden directories are really hidden (compared with the host's device and inode), the
capabilities, ``no_new_privs``, the environment's names and whether a child can become ``nobody``
(probed with a tiny fork). Guarantees: it never raises for a missing layer (it reports it absent), and
it runs before torch is imported.
"""
from __future__ import annotations

import errno
import os
import socket
from typing import Any

from lossforge.sandbox.syscalls import NOBODY, PR_GET_NO_NEW_PRIVS, prctl


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
