"""Where candidate code runs and its limits: the ``[sandbox]`` section (``SandboxConfig``) and its Docker table.

Plain pydantic; ``lossforge.sandbox.factory.make_sandbox`` builds the sandbox these settings describe.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from lossforge.settings.base import Strict

__all__ = ["DockerSandboxConfig", "SandboxConfig"]


class DockerSandboxConfig(Strict):
    """The Docker backend's container (``[sandbox.docker]``; see lossforge.sandbox.docker_backend)."""

    image: str | None = Field(None, description="An image built from docker/Dockerfile; None: a skeleton image "
                                                "made locally, with the host's Python bound read-only.")
    host_python: bool = Field(True, description="Bind the host's /usr, Python and lossforge read-only (False "
                                                "with an own image).")
    memory_mb: int | None = Field(None, ge=512, description="Container memory limit (None: memory_mb + 1024).")
    pids_limit: int = Field(128, ge=16, description="Processes and threads in the container.")
    tmpfs_mb: int = Field(64, ge=8, description="Size of the container's /tmp (the children's scratch).")
    base_url: str | None = Field(None, description="The engine, e.g. unix:///var/run/docker.sock (None: DOCKER_HOST).")


class SandboxConfig(Strict):
    """Where candidate code runs and its limits."""

    backend: Literal["process", "docker"] = Field(
        "process", description="process: the isolated worker server (bubblewrap/unshare); docker: the same "
                               "server in a locked-down container.")
    isolation: Literal["auto", "bwrap", "unshare", "none"] = Field(
        "auto", description="The process backend's isolation (auto: the strongest this host allows).")
    docker: DockerSandboxConfig = DockerSandboxConfig()
    check_timeout: float = Field(10.0, gt=0, description="Seconds for the unit checks of one candidate.")
    screen_timeout: float = Field(180.0, gt=0, description="Seconds for the proxy screen of one candidate.")
    memory_mb: int | None = Field(4096, ge=256, description="Address-space limit of a sandboxed child.")
