"""Build the configured sandbox backend from ``[sandbox]`` settings (one place for the run, tools and TUI).

Guarantees: ``backend = "process"`` gives a ``ProcessSandbox`` with the configured isolation;
``backend = "docker"`` the same server in a container with ``[sandbox.docker]``'s settings. Nothing is
started here (the server starts on first use). ``sandbox_for_search`` adds the search's executor:
``"local"`` is ``sandbox_from_config``; ``"ray"`` a ``RaySandbox`` (``lossforge.sandbox.ray_sandbox``:
each call a Ray task, in that same sandbox on its worker), which connects to Ray when it is made.
"""
from __future__ import annotations

from typing import Any, Literal

from lossforge.settings.sandbox import SandboxConfig
from lossforge.sandbox.process import ProcessSandbox

__all__ = ["sandbox_from_config", "sandbox_for_search"]


def sandbox_from_config(config: SandboxConfig, *, timeout: float | None = None,
                        max_concurrency: int = 1) -> ProcessSandbox:
    """A sandbox for ``config`` (``timeout``: seconds per check, default ``config.check_timeout``) that runs
    up to ``max_concurrency`` children at once (the candidates a search has in flight)."""
    limit = config.check_timeout if timeout is None else timeout
    if config.backend == "docker":
        from lossforge.sandbox.docker_backend import DockerSettings

        docker = config.docker
        settings = DockerSettings(image=docker.image, host_python=docker.host_python, memory_mb=docker.memory_mb,
                                  pids_limit=docker.pids_limit, tmpfs_mb=docker.tmpfs_mb, base_url=docker.base_url)
        return ProcessSandbox(timeout=limit, memory_mb=config.memory_mb, isolation="docker", docker=settings,
                              max_concurrency=max_concurrency)
    return ProcessSandbox(timeout=limit, memory_mb=config.memory_mb, isolation=config.isolation,
                          max_concurrency=max_concurrency)


def sandbox_for_search(config: SandboxConfig, *, executor: Literal["local", "ray"] = "local",
                       ray_address: str | None = None, max_concurrency: int = 1, run_cpus: float = 1.0) -> Any:
    """The search's sandbox. ``executor = "local"``: ``sandbox_from_config(config, max_concurrency=...)``.
    ``"ray"``: a ``RaySandbox`` on the cluster at ``ray_address`` (None: a local Ray instance for the run)
    whose run tasks (screens) reserve ``run_cpus`` CPUs each and checks one; the calls in flight are
    bounded by the caller (the search's concurrency). Raises ``ImportError`` naming
    ``pip install 'lossforge[ray]'`` without ray, ``ValueError`` for an unknown executor."""
    if executor == "local":
        return sandbox_from_config(config, max_concurrency=max_concurrency)
    if executor == "ray":
        from lossforge.sandbox.ray_sandbox import RaySandbox

        return RaySandbox(config, build=sandbox_from_config, address=ray_address, run_cpus=run_cpus)
    raise ValueError(f"unknown executor {executor!r}: use 'local' or 'ray'")
