"""Launchers: where training jobs run (this machine, a Ray cluster, Slurm), behind one small Protocol.

``LocalLauncher`` and ``RayLauncher`` are tested end to end (Ray with a local instance);
``SlurmLauncher`` through submitit's local executor when submitit is installed. ``ray`` and
``submitit`` are optional and imported only when their launcher is used. All share the job format
(``TrainJob``) and entry point (``python -m lossforge.trainer.job_main JOB_DIR``);
``LauncherSettings`` (``lossforge.settings.launcher``) configures one and ``factory.make_launcher``
builds it.

Names are resolved lazily, so importing this package loads neither torch, ray nor submitit.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["JobHandle", "JobStatus", "Launcher", "TrainJob", "job_key", "LocalLauncher", "RayLauncher",
           "SlurmLauncher", "LauncherSettings", "make_launcher"]

_WHERE = {
    "JobHandle": "base", "JobStatus": "base", "Launcher": "base", "TrainJob": "base", "job_key": "base",
    "LocalLauncher": "local", "RayLauncher": "ray_launcher", "SlurmLauncher": "slurm",
    "LauncherSettings": "lossforge.settings.launcher", "make_launcher": "factory",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
