"""Launchers: where training jobs run (this machine, a Ray cluster, Slurm), behind one small Protocol.

``LocalLauncher`` and ``RayLauncher`` are tested end to end (Ray with a local instance);
``SlurmLauncher`` through submitit's local executor when submitit is installed. ``ray`` and
``submitit`` are optional and imported only when their launcher is used. All share the job format
(``TrainJob``) and entry point (``python -m lossforge.trainer.job_main JOB_DIR``);
``settings.LauncherSettings`` / ``settings.make_launcher`` build one from configuration.

Names are resolved lazily, so ``lossforge.trainer.launchers.settings`` (pydantic only) can be imported
by the configuration without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["JobHandle", "JobStatus", "Launcher", "TrainJob", "job_key", "LocalLauncher", "RayLauncher",
           "SlurmLauncher", "LauncherSettings", "make_launcher"]

_WHERE = {
    "JobHandle": "base", "JobStatus": "base", "Launcher": "base", "TrainJob": "base", "job_key": "base",
    "LocalLauncher": "local", "RayLauncher": "ray_launcher", "SlurmLauncher": "slurm",
    "LauncherSettings": "settings", "make_launcher": "settings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
