"""``doctor()``: every isolation layer on this host, what is missing and how to get it (``lossforge doctor``).

Guarantees: plain JSON-able data; it never raises for a missing layer or a sandbox that cannot start (it
reports them). With ``start=True`` it starts a ``ProcessSandbox`` (a few seconds) to measure the layers
in effect inside; it also says whether a Docker engine answers for the Docker backend.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from typing import Any

from lossforge.sandbox.docker_backend import docker_status
from lossforge.sandbox.isolation import choose_backend, probe_host
from lossforge.sandbox.process import ProcessSandbox

__all__ = ["doctor"]


def doctor(start: bool = True) -> dict[str, Any]:
    """Every isolation layer on this host: what is available, which backend ``ProcessSandbox`` uses, and
    (``start=True``: starts a sandbox, a few seconds) the layers measured inside it. Plain JSON-able
    data, for ``lossforge doctor``."""
    facts = probe_host()
    out: dict[str, Any] = {
        "host": {
            "platform": platform.platform(),
            "kernel": facts.kernel,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "running_as_root": facts.root,
            "bubblewrap": facts.bwrap,
            "bubblewrap_works": facts.bwrap_works,
            "unshare_works": facts.unshare_works,
            "user_namespaces_allowed": facts.user_namespaces,
            "user_namespaces_detail": facts.user_namespaces_detail,
        },
    }
    problems = {}
    if facts.bwrap_error:
        problems["bubblewrap"] = facts.bwrap_error
    if facts.unshare_error:
        problems["unshare"] = facts.unshare_error
    out["problems"] = problems
    try:
        backend = choose_backend("auto")
    except ValueError as exc:
        out["backend"] = None
        out["error"] = str(exc)
        return out
    out["backend"] = backend
    hints = []
    if not facts.bwrap_works:
        if facts.root and shutil.which("apt-get"):
            hints.append("install bubblewrap: apt-get install -y bubblewrap")
        else:
            hints.append("install bubblewrap (package `bubblewrap`) for the read-only view, no network and "
                         "a PID namespace")
    if backend == "none":
        hints.append("no namespace layer is available: run as root, allow user namespaces "
                     "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0), or install "
                     "bubblewrap")
    if not facts.root:
        hints.append("children keep your user id (switching to nobody needs root)")
    out["hints"] = hints
    out["docker"] = docker_status()  # the optional backend: [sandbox] backend = "docker"
    if start:
        sandbox = ProcessSandbox()
        try:
            out["layers"] = sandbox.layers()
        except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
            out["layers"] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            sandbox.close()
    return out
