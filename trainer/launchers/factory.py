"""Building the launcher the configuration names: ``make_launcher``, ``handle_for``, ``launcher_root``.

What it guarantees
------------------
* ``make_launcher(settings, root)`` builds the launcher ``settings`` (``lossforge.settings.launcher.
  LauncherSettings``) describe, with its jobs under ``root`` (one directory per job key):
  ``LocalLauncher(root)``, ``RayLauncher(root=root)`` (a local Ray instance when ``ray_address`` is None,
  else the cluster at that address), or ``SlurmLauncher(root)`` (submitit on Slurm, or submitit's local
  executor with ``slurm_cluster = "local"``).
* ``handle_for(launcher, key)`` is the handle of a job known only by its key (``root/<key>``), for
  status queries from another process or after a restart.

What it does not guarantee
--------------------------
* That the optional backend is installed: ``make_launcher`` raises ``ImportError`` naming the extra
  (``pip install 'lossforge[ray]'`` / ``[slurm]``) when it is not.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lossforge.settings.launcher import LauncherSettings

__all__ = ["make_launcher", "handle_for", "launcher_root"]


def make_launcher(settings: LauncherSettings, root: str | Path) -> Any:
    """The launcher ``settings`` describe, with its job directories under ``root``."""
    root = Path(root).expanduser().resolve()
    if settings.kind == "local":
        from lossforge.trainer.launchers.local import LocalLauncher

        return LocalLauncher(root, gpus=settings.gpus, max_concurrent=settings.max_concurrent, poll_s=settings.poll_s)
    if settings.kind == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ImportError("the Ray launcher needs ray: pip install 'lossforge[ray]'")
        from lossforge.trainer.launchers.ray_launcher import RayLauncher

        return RayLauncher(settings.ray_address, root=root, num_gpus=settings.ray_num_gpus,
                           num_cpus=settings.ray_num_cpus, init_kwargs=dict(settings.ray_init))
    if importlib.util.find_spec("submitit") is None:
        raise ImportError("the Slurm launcher needs submitit: pip install 'lossforge[slurm]'")
    from lossforge.trainer.launchers.slurm import SlurmLauncher

    return SlurmLauncher(root, partition=settings.slurm_partition, gpus_per_node=settings.slurm_gpus_per_node,
                         cpus_per_task=settings.slurm_cpus_per_task, mem_gb=settings.slurm_mem_gb,
                         account=settings.slurm_account, qos=settings.slurm_qos, cluster=settings.slurm_cluster,
                         extra=dict(settings.slurm_extra), poll_s=settings.poll_s)


def launcher_root(launcher: Any) -> Path:
    """The folder holding a launcher's job directories."""
    for name in ("root", "folder"):
        value = getattr(launcher, name, None)
        if value is not None:
            return Path(value)
    raise TypeError(f"{type(launcher).__name__} has no job root (root or folder attribute)")


def handle_for(launcher: Any, key: str) -> Any:
    """The handle of the job ``key`` under ``launcher``'s root (it need not have been submitted here)."""
    from lossforge.trainer.launchers.base import JobHandle

    return JobHandle(key=key, backend=getattr(launcher, "backend", type(launcher).__name__),
                     job_dir=str(launcher_root(launcher) / key))
