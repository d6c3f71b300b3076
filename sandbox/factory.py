"""Build the configured sandbox backend from ``[sandbox]`` settings (one place for the run, tools and TUI).

Guarantees: ``backend = "process"`` gives a ``ProcessSandbox`` with the configured isolation;
``backend = "docker"`` the same server in a container with ``[sandbox.docker]``'s settings. Nothing is
started here (the server starts on first use).
"""
from __future__ import annotations

from lossforge.settings.sandbox import SandboxConfig
from lossforge.sandbox.process import ProcessSandbox

__all__ = ["sandbox_from_config"]


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
