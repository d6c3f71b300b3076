"""Which launcher runs training jobs, as configuration: ``LauncherSettings`` (plain pydantic).

Importing it loads neither torch, ray nor submitit, so the run configuration and the tool settings embed
it. Unknown keys are an error. A bare string is accepted for the whole model (``launcher = "ray"`` means
``{kind = "ray"}``). ``lossforge.trainer.launchers.factory.make_launcher`` builds the launcher it names.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lossforge.settings.base import Strict

__all__ = ["LauncherSettings"]


class LauncherSettings(Strict):
    """Where training jobs run and the backend's options."""


    kind: Literal["local", "ray", "slurm"] = Field("local", description="'local' (subprocesses here), 'ray' or 'slurm'.")
    max_concurrent: int | None = Field(None, ge=1, description="local: jobs at once (default: one per GPU, 1 without).")
    gpus: list[str] | None = Field(None, description="local: GPU ids to hand out (default: the visible GPUs).")
    poll_s: float = Field(0.5, gt=0, description="local, slurm: seconds between status polls.")
    ray_address: str | None = Field(None, description="ray: cluster address ('auto' joins a running one); none starts a local instance.")
    ray_num_gpus: float = Field(1.0, ge=0, description="ray: GPUs per job.")
    ray_num_cpus: float = Field(1.0, gt=0, description="ray: CPUs per job.")
    ray_init: dict[str, Any] = Field(default_factory=dict, description="ray: extra ray.init keyword arguments.")
    slurm_partition: str | None = Field(None, description="slurm: sbatch --partition.")
    slurm_gpus_per_node: int = Field(1, ge=0, description="slurm: sbatch --gpus-per-node.")
    slurm_cpus_per_task: int = Field(8, ge=1, description="slurm: sbatch --cpus-per-task.")
    slurm_mem_gb: int = Field(64, ge=1, description="slurm: sbatch --mem (GB).")
    slurm_account: str | None = Field(None, description="slurm: sbatch --account.")
    slurm_qos: str | None = Field(None, description="slurm: sbatch --qos.")
    slurm_extra: dict[str, Any] = Field(default_factory=dict, description=(
        "slurm: further submitit AutoExecutor parameters, e.g. {slurm_constraint = 'a100'}."))
    slurm_cluster: Literal["slurm", "local"] = Field("slurm", description=(
        "slurm: submitit cluster; 'local' runs jobs through submitit's local executor (tests, debugging)."))

    @model_validator(mode="before")
    @classmethod
    def _from_kind(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data
