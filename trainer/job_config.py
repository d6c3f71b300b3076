"""The configuration and the result of one GPU training job: ``JobConfig`` (with ``LoraConfig``), what a
job returns (``JobResult``, also written to ``result.json``), ``DegenerateLossError`` and the TRL version
check. ``lossforge.trainer.trl_job`` runs the job.

What it guarantees: unknown keys are an error (``extra="forbid"``), the eval split differs from the
train split, and importing this module loads neither torch nor TRL (the launchers and the tools read
job configurations and results without them; ``check_trl_version`` imports TRL when called).
"""
from __future__ import annotations

import os
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, field_validator

from lossforge.errors import CandidateError
from lossforge.settings.base import Strict

__all__ = ["TRL_SUPPORTED", "JobConfig", "LoraConfig", "JobResult", "DegenerateLossError", "check_trl_version"]

#: The TRL versions ``trl_job``'s ``_compute_loss`` override is written and tested against.
TRL_SUPPORTED = ">=1.16,<1.17"


def check_trl_version() -> str:
    """The installed TRL version; raises RuntimeError outside ``TRL_SUPPORTED`` (unless overridden)."""
    import trl
    from packaging.specifiers import SpecifierSet

    version = trl.__version__
    if version not in SpecifierSet(TRL_SUPPORTED) and os.environ.get("LOSSFORGE_ALLOW_ANY_TRL") != "1":
        raise RuntimeError(
            f"lossforge's TRL job supports trl{TRL_SUPPORTED}, found trl {version}. Install a supported "
            "version, or set LOSSFORGE_ALLOW_ANY_TRL=1 and run tests/trainer/test_trl_job.py to confirm the "
            "candidate-loss trainer still matches TRL's built-in losses."
        )
    return version


# --------------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------------


class LoraConfig(Strict):
    """LoRA adapter settings (needs ``peft``); the reference is the base model with the adapter off."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class JobConfig(Strict):
    """One training job. Unknown keys are an error. Defaults follow the DiscoPOP paper where it says."""

    model: str = Field(..., description="hub id or local directory of the SFT model (also the reference)")
    revision: Optional[str] = None
    tokenizer: Optional[str] = Field(None, description="defaults to `model`")
    dataset: str = Field(..., description="hub id, or a local .json/.jsonl file with prompt/chosen/rejected")
    dataset_config: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = Field("test", description="held-out split; when missing, carved from train")
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of train held out if no eval split")
    max_train_rows: Optional[int] = Field(None, ge=1)
    max_eval_rows: Optional[int] = Field(None, ge=1)

    beta: float = Field(0.05, gt=0.0, le=10.0)
    learning_rate: float = Field(5e-7, gt=0.0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                               "polynomial", "inverse_sqrt"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: Optional[int] = Field(None, ge=1, description="overrides epochs when set")
    batch_size: int = Field(8, ge=1, description="per-device train batch size (pairs)")
    eval_batch_size: Optional[int] = Field(None, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: Optional[int] = Field(1024, ge=2, description="prompt + completion tokens (TRL's max_length)")
    truncation_mode: Literal["keep_start", "keep_end"] = "keep_start"
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    gradient_checkpointing: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    lora: Optional[LoraConfig] = None
    seed: int = Field(42, ge=0)
    logging_steps: int = Field(1, ge=1)
    output_dir: Optional[str] = Field(None, description="the job directory; run_job's argument wins")
    save_model: bool = True
    precompute_ref: bool = Field(True, description="reference log-probs once up front (and cached)")
    ref_cache_dir: Optional[str] = Field("~/.cache/lossforge/ref_logps", description="None: no cache")

    @field_validator("eval_split")
    @classmethod
    def _no_same_split(cls, v: Optional[str], info) -> Optional[str]:  # noqa: ANN001
        if v is not None and v == info.data.get("train_split"):
            raise ValueError("eval_split must differ from train_split (or be omitted to carve a held-out part)")
        return v

    def key_fields(self) -> dict[str, Any]:
        """What identifies the training (for a job key): everything but where the output goes."""
        return self.model_dump(exclude={"output_dir", "ref_cache_dir", "logging_steps"})


class JobResult(BaseModel):
    """What a job returns (and writes to ``result.json``)."""

    ok: bool
    error: Optional[str] = None
    eval_accuracy: Optional[float] = None
    eval_margin: Optional[float] = None
    eval_pairs: int = 0
    eval_metrics: dict[str, float] = Field(default_factory=dict)
    train_loss: Optional[float] = None
    steps: int = 0
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    ref_cache: dict[str, Any] = Field(default_factory=dict)
    check_report: Optional[dict[str, Any]] = None
    job_dir: Optional[str] = None
    model_dir: Optional[str] = None
    trl_version: Optional[str] = None


class DegenerateLossError(CandidateError, RuntimeError):
    """The candidate produced a non-finite loss or a wrongly shaped output during training."""
