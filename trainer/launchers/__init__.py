"""Launchers: where training jobs run (this machine, a Ray cluster, Slurm), behind one small Protocol.

``LocalLauncher`` is complete and tested; ``RayLauncher`` and ``SlurmLauncher`` import their backends
lazily (``ray``, ``submitit`` are optional) and share the job format (``TrainJob``) and entry point
(``python -m lossforge.trainer.job_main JOB_DIR``).
"""
from lossforge.trainer.launchers.base import JobHandle, JobStatus, Launcher, TrainJob, job_key
from lossforge.trainer.launchers.local import LocalLauncher
from lossforge.trainer.launchers.ray_launcher import RayLauncher
from lossforge.trainer.launchers.slurm import SlurmLauncher

__all__ = ["JobHandle", "JobStatus", "Launcher", "TrainJob", "job_key", "LocalLauncher", "RayLauncher",
           "SlurmLauncher"]
