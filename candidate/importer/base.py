"""What the importer knows and what it returns: the candidate's parameters, TRL's newer argument names and
``DPOConfig`` defaults, the modules a candidate may use, and the result types (``ImportedLoss``,
``ImportResult``, ``ImportError_``).

What this module guarantees
---------------------------
* Data and plain types only; importing it does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lossforge.errors import UsageError


#: The candidate's parameters, in order (the same as ``lossforge.candidate.allowlist.PARAMETERS``).
CANDIDATE_PARAMETERS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
    "beta",
)

#: TRL >= 0.12 argument names -> the candidate's names.
TRL_NEW_NAMES = {
    "chosen_logps": "policy_chosen_logps",
    "rejected_logps": "policy_rejected_logps",
    "ref_chosen_logps": "reference_chosen_logps",
    "ref_rejected_logps": "reference_rejected_logps",
}

#: Trainer attributes a loss reads, with TRL ``DPOConfig``'s defaults (the same in TRL 0.8 to 1.x where the
#: field exists). ``self.X`` and ``self.args.X`` both read these.
TRL_DEFAULTS: dict[str, Any] = {
    "label_smoothing": 0.0,
    "loss_type": "sigmoid",
    "reference_free": False,
    "discopop_tau": 0.05,
    "f_divergence_type": "reverse_kl",
    "f_divergence_params": None,
    "f_alpha_divergence_coef": 1.0,
    "use_weighting": False,
    "rpo_alpha": None,
    "ld_alpha": None,
    "is_encoder_decoder": False,
    "aux_loss_enabled": False,
}

#: Module-level constants of TRL that ``dpo_loss`` compares against (``trl.trainer.utils``, TRL 0.x).
_TRL_CONSTANTS: dict[str, Any] = {
    "FDivergenceType.REVERSE_KL.value": "reverse_kl",
    "FDivergenceType.JS_DIVERGENCE.value": "js_divergence",
    "FDivergenceType.ALPHA_DIVERGENCE.value": "alpha_divergence",
    "FDivergenceConstants.ALPHA_DIVERGENCE_COEF_DEFAULT": 1.0,
    "FDivergenceConstants.ALPHA_DIVERGENCE_COEF_KEY": "alpha",
}

#: The import preamble of every imported candidate (as ``lossforge.trainer.losses.CANDIDATE_PREAMBLE``).
_PREAMBLE = "import math\nimport torch\nimport torch.nn.functional as F\n"

_MODULES = {"torch": "torch", "torch.nn.functional": "F", "math": "math", "torch.nn": "torch.nn"}
_DEVICE = "__device__"  # placeholder for self.accelerator.device while transforming


class ImportError_(UsageError):
    """The source cannot be read as Python, or names no function to import (the message says why)."""


@dataclass
class ImportedLoss:
    """One loss in the candidate form: ``code`` (a complete candidate module), the function ``name``,
    where it came from (``origin``, ``qualname``) and what was changed, in words (``changes``)."""

    name: str
    qualname: str
    origin: str
    code: str
    changes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """The losses imported from one source and the functions refused, as (qualified name, reason)."""

    imported: list[ImportedLoss] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
