"""The loss library: known preference-optimization losses, each written as a lossforge candidate.

What this module guarantees
---------------------------
* Every loss in ``LIBRARY`` is a standalone module-level function with the candidate signature::

      def name(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, beta) -> losses  # shape (batch,)

  The four inputs are summed log-probabilities of shape ``(batch,)``; ``beta`` is a python float.
  Each function uses only ``torch``, ``torch.nn.functional as F`` and ``math``; every constant it needs
  (label smoothing, tau, ...) lives inside its body, never in a global or an extra parameter. So the
  source of one function, behind the fixed import preamble, is a complete candidate:
  ``library_code(name)`` returns exactly that, and ``exec`` of it in a fresh namespace defines exactly one
  function. These are the seeds of every search.
* Each function's docstring cites its source (paper title and arXiv id, TRL ``loss_type`` if any) and says
  where it departs from that source.
* ``TRL_LOSS_TYPES`` names the TRL 1.x ``loss_type`` that computes the same formula, and
  ``TRL_CONFIG`` the extra ``DPOConfig`` fields needed to reproduce it; the tests check each such loss
  against the real ``trl.DPOTrainer._compute_loss`` code path.

What it does not guarantee
--------------------------
* Not every loss is per-pair independent: ``kto_pair``, ``aot_pair``, ``aqfl``, ``aql`` and ``dbaql`` use
  statistics of the whole batch (means, sorting, variance), exactly as their reference implementations do,
  so their value for one pair depends on the other pairs in the batch.
* The formulas are held as published, overflow included: the ``exp(-beta * margin)`` terms of discopop,
  cell and dbaql overflow to inf in float32 once beta times the margin is below about -88 (-98 for
  dbaql), as the paper's code and TRL's ``loss_type="discopop"`` do. That is far outside the margins
  training reaches (``lossforge.candidate.checks.TRAINING_MARGIN_LIMIT``: |beta * margin| <= 50), where
  the check gate reports it as a warning, not a failure. The only departures are where the official
  code gives NaN for a batch of one pair (std/var of one value; see aqfl and dbaql).
* Nothing here trains or evaluates; this is only the formulas.
"""

from __future__ import annotations

import inspect
import math  # noqa: F401  (part of the candidate namespace; some candidates use it)
import textwrap
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "LIBRARY",
    "TRL_LOSS_TYPES",
    "TRL_CONFIG",
    "CANDIDATE_PREAMBLE",
    "library_code",
    "library_names",
]

#: The import preamble put in front of every library function to make it a standalone candidate.
CANDIDATE_PREAMBLE = "import math\nimport torch\nimport torch.nn.functional as F\n\n\n"


# --------------------------------------------------------------------------------------------------
# Logistic / hinge / squared families
# --------------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO: -log sigmoid(beta * margin), margin = (pi_c - pi_r) - (ref_c - ref_r).

    Source: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
    Model", arXiv:2305.18290, Eq. 7. TRL loss_type "sigmoid" (with label_smoothing 0).
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits)


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """IPO: (margin - 1 / (2 * beta)) ** 2 on the summed (sequence-level) log-ratios; beta plays tau.

    Source: Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    arXiv:2310.12036, Eq. 17. This is the original, unnormalised form, as in TRL 0.x and in the DiscoPOP
    code. Difference from TRL 1.x loss_type "ipo": TRL divides each of the chosen and rejected log-ratios
    by its completion length (number of completion tokens) before taking the margin; the two agree
    exactly when both completions are one token long (which is how the tests check it against TRL).
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return (logits - 1.0 / (2.0 * beta)) ** 2


def slic_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """SLiC / hinge: relu(1 - beta * margin), margin of the policy-to-reference log-ratios.

    Source: Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv:2305.10425
    (rank-calibration hinge loss, with beta as the reciprocal of the hinge margin and the reference
    log-ratio subtracted as in DPO). TRL loss_type "hinge".
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return torch.relu(1.0 - beta * logits)


def robust_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Robust DPO (rDPO), label-flip rate eps = 0.1: unbiased DPO loss under noisy preferences.

    loss = (-(1 - eps) * logsigmoid(beta * m) + eps * logsigmoid(-beta * m)) / (1 - 2 * eps).
    Source: Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
    arXiv:2403.00409, Eq. 8. TRL loss_type "robust" with label_smoothing=0.1 (the paper's typical value).
    Note: unbounded below as the margin grows (the eps term is subtracted), as in the paper.
    """
    label_smoothing = 0.1
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    clean = -(1.0 - label_smoothing) * F.logsigmoid(beta * logits)
    flipped = -label_smoothing * F.logsigmoid(-beta * logits)
    return (clean - flipped) / (1.0 - 2.0 * label_smoothing)


def exo_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """EXO-pair, eps = 1e-3: reverse KL(p_theta || p_label) over {chosen, rejected}.

    p_theta = softmax(beta * log-ratios) over the pair, p_label = (1 - eps, eps).
    Source: Ji et al., "Towards Efficient Exact Optimization of Language Model Alignment",
    arXiv:2402.00856, Eq. 16 (EXO-pref, K = 2). TRL loss_type "exo_pair" with label_smoothing=1e-3 (the
    paper's recommended value).
    """
    label_smoothing = 1e-3
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    z = beta * logits
    qw = torch.sigmoid(z)
    ql = torch.sigmoid(-z)
    log_pw = math.log1p(-label_smoothing)
    log_pl = math.log(label_smoothing)
    return qw * (F.logsigmoid(z) - log_pw) + ql * (F.logsigmoid(-z) - log_pl)


def nca_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """NCA-pair: -logsigmoid(r_c) - 0.5 * logsigmoid(-r_c) - 0.5 * logsigmoid(-r_r), r = beta * log-ratio.

    Source: Chen et al., "Noise Contrastive Alignment of Language Models with Explicit Rewards",
    arXiv:2402.05369 (NCA for pairwise preference data). TRL loss_type "nca_pair".
    """
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    return (
        -F.logsigmoid(chosen_rewards)
        - 0.5 * F.logsigmoid(-chosen_rewards)
        - 0.5 * F.logsigmoid(-rejected_rewards)
    )


def bco_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """BCO-pair: -logsigmoid(r_c) - logsigmoid(-r_r), r = beta * log-ratio (binary classifier per answer).

    Source: Jung et al., "Binary Classifier Optimization for Large Language Model Alignment",
    arXiv:2404.04656. TRL 1.x loss_type "bco_pair". Difference from the paper and TRL 0.x: those subtract
    a running mean delta of the rewards (reward shift) carried across steps; a candidate is stateless, so
    delta = 0 here, which is exactly what TRL 1.x computes.
    """
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)


def sppo_hard_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """SPPO-hard: (lr_c - 1 / (2 * beta)) ** 2 + (lr_r + 1 / (2 * beta)) ** 2, lr = policy/ref log-ratio.

    Source: Wu et al., "Self-Play Preference Optimization for Language Model Alignment", arXiv:2405.00675,
    Eq. 4.7 with the hard win probability (P = 1 for the winner, 0 for the loser). TRL loss_type
    "sppo_hard".
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2


def apo_zero_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """APO-zero: (1 - sigmoid(r_c)) + sigmoid(r_r), r = beta * log-ratio (anchored at the reference).

    Source: D'Oosterlinck et al., "Anchored Preference Optimization and Contrastive Revisions: Addressing
    Underspecification in Alignment", arXiv:2408.06266, Eq. 7. TRL loss_type "apo_zero".
    """
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    return (1.0 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)


def aot_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """AOT (paired): DPO loss on sorted policy margins minus sorted reference margins (1-D optimal transport).

    Source: Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv:2406.05882. TRL loss_type "aot" (label_smoothing 0, the TRL default).
    Batch-coupled: the policy log-ratio margins and the reference margins are each sorted across the batch,
    so element i is the loss of the i-th quantile, not of pair i; only the batch mean is meaningful per pair.
    """
    logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logratios_sorted, _ = torch.sort(logratios, dim=0)
    ref_logratios_sorted, _ = torch.sort(ref_logratios, dim=0)
    delta = logratios_sorted - ref_logratios_sorted
    return -F.logsigmoid(beta * delta)


def kto_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """KTO-pair: the paired KTO of TRL 0.x (loss_type "kto_pair", removed from TRL since).

    chosen_KL = clamp(mean(lr_c), min=0), rejected_KL = clamp(mean(lr_r), min=0) (batch means, not
    detached, as in TRL 0.x), and per pair the mean of the chosen half 1 - sigmoid(beta * (lr_c -
    rejected_KL)) and the rejected half 1 - sigmoid(beta * (chosen_KL - lr_r)).
    Source: Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv:2402.01306
    (Eq. 7 of the HALOs report, with the KL reference point of chosen answers estimated from the rejected
    half and vice versa); formula as in TRL 0.8 DPOTrainer.dpo_loss and the DiscoPOP code.
    Difference: TRL 0.x returns the two halves concatenated (shape 2 * batch); here they are averaged per
    pair so the result has shape (batch,) and its batch mean equals TRL 0.x's batch mean exactly.
    Batch-coupled through the KL means.
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    chosen_KL = chosen_logratios.mean().clamp(min=0)
    rejected_KL = rejected_logratios.mean().clamp(min=0)
    chosen_half = 1.0 - torch.sigmoid(beta * (chosen_logratios - rejected_KL))
    rejected_half = 1.0 - torch.sigmoid(beta * (chosen_KL - rejected_logratios))
    return 0.5 * (chosen_half + rejected_half)


# --------------------------------------------------------------------------------------------------
# Losses discovered in the DiscoPOP paper (Lu et al. 2024, arXiv:2406.08414, Appendix); formulas as in
# the official code, luchris429/DiscoPOP (SakanaAI), src/alignment/gpo.py: the methods that its
# gpo_loss dispatches to (not the "_old" variants). There, logits = beta * (pi_logratios - ref_logratios),
# and some statistics use logits / 0.05: 0.05 is the paper's beta, hard-coded; kept as is.
# --------------------------------------------------------------------------------------------------


def discopop_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DiscoPOP / LRML (log-ratio modulated loss), tau = 0.05.

    With z = beta * margin and w = sigmoid(z / tau): loss = (1 - w) * -logsigmoid(z) + w * exp(-z).
    Source: Lu et al., "Discovering Preference Optimization Algorithms with and for Large Language Models",
    arXiv:2406.08414, Eq. 5; official code log_ratio_modulated_loss. TRL loss_type "discopop" with
    discopop_tau=0.05 (the TRL default).
    """
    tau = 0.05
    logits = beta * (
        (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    )
    log_ratio_modulation = torch.sigmoid(logits / tau)
    logistic_component = -F.logsigmoid(logits)
    exp_component = torch.exp(-logits)
    return logistic_component * (1.0 - log_ratio_modulation) + exp_component * log_ratio_modulation


def padll_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """PADLL (performance adaptive decay logistic loss): DPO loss weighted 0.9, or 0.45 on mismatches.

    loss = 0.9 * (1 - 0.5 * [margin < 0]) * -logsigmoid(beta * margin).
    Source: Lu et al., arXiv:2406.08414, Appendix (discovered objectives); official code
    performance_adaptive_decay_logistic_loss. No TRL loss_type.
    Note: the weight jumps at margin 0, so for |beta * margin| below ln(golden ratio) ~ 0.481 the loss is
    LOWER at a negative margin than at the mirrored positive one; it prefers the chosen answer only beyond.
    """
    base_decay = 0.9
    mismatch_penalty = 0.5
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    mismatches = (logits < 0).to(logits.dtype)
    adaptive_decay = base_decay * (1.0 - mismatches * mismatch_penalty)
    return adaptive_decay * -F.logsigmoid(beta * logits)


def aqfl_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """AQFL (adaptive quantile feedback loss): logistic/hinge blend weighted by distance to a batch quantile.

    With z = beta * margin, s = z / 0.05: q = std(s) * mean(sigmoid(-s)); q += 0.05 * (sigmoid(mean(s)) - q);
    w = sigmoid(0.1 * |s - q|); loss = w * -logsigmoid(z) + (1 - w) * relu(1 - z).
    Source: Lu et al., arXiv:2406.08414, Appendix; official code adaptive_quantile_feedback_loss.
    No TRL loss_type. Batch-coupled through std and means (gradients flow through them, as in the code).
    Departures, only where the official code gives NaN: std is the unbiased std (torch default) for a batch
    of two or more, computed as sqrt(max(var, 1e-12)) so its gradient stays finite when all margins are
    equal (the value differs only when std < 1e-6); a batch of one pair has no spread, so std = 0 there.
    """
    quantile_update_rate = 0.05
    distance_scale = 0.1
    logits = beta * (
        (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    )
    scaled = logits / 0.05
    if scaled.numel() > 1:
        logits_std = scaled.var().clamp(min=1e-12).sqrt()
    else:
        logits_std = torch.zeros((), dtype=scaled.dtype, device=scaled.device)
    adaptive_quantile = logits_std * torch.sigmoid(-scaled).mean()
    adaptive_quantile = adaptive_quantile + quantile_update_rate * (
        torch.sigmoid(scaled.mean()) - adaptive_quantile
    )
    distance_from_quantile = (scaled - adaptive_quantile).abs()
    blend_rate = torch.sigmoid(distance_scale * distance_from_quantile)
    logistic_losses = -F.logsigmoid(logits)
    hinge_losses = torch.relu(1.0 - logits)
    return blend_rate * logistic_losses + (1.0 - blend_rate) * hinge_losses


def aql_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """AQL (adaptive quantile loss): logistic/hinge blend weighted by the distance to a moving quantile.

    With z = beta * margin, s = z / 0.05: q = 0.5 + 0.01 * (sigmoid(mean(s)) - 0.5); w = sigmoid(-(s - q));
    loss = w * -logsigmoid(z) + (1 - w) * relu(1 - z).
    Source: Lu et al., arXiv:2406.08414, Appendix (discovered objectives); official code
    adaptive_quantile_loss (luchris429/DiscoPOP, src/alignment/gpo.py; loss_type "aql"). No TRL loss_type.
    Batch-coupled through mean(s) (gradients flow through it, as in the code). No departure.
    """
    percentile = 0.5
    moving_quantile_weight = 0.01
    logits = beta * (
        (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    )
    moving_quantile = percentile + moving_quantile_weight * (torch.sigmoid((logits / 0.05).mean()) - percentile)
    quantile_weights = torch.sigmoid(-(logits / 0.05 - moving_quantile))
    logistic_losses = -F.logsigmoid(logits)
    hinge_losses = torch.relu(1.0 - logits)
    return quantile_weights * logistic_losses + (1.0 - quantile_weights) * hinge_losses


def pfl_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """PFL (policy focused loss): halved logistic loss where the policy ranks the pair right, doubled hinge
    where it does not.

    With z = beta * margin and correct = policy_chosen_logps > policy_rejected_logps (the policy's own
    log-probs, not the margin): loss = -logsigmoid(z) / 2 if correct else 2 * relu(1 - z).
    Source: Lu et al., arXiv:2406.08414, Appendix (discovered objectives); official code
    policy_focused_loss (luchris429/DiscoPOP, src/alignment/gpo.py; loss_type "pfl"). No TRL loss_type.
    No departure. Note: where the policy ranks the pair wrong but z >= 1 (the reference ranks it even
    more wrongly), the hinge is 0 and so is the gradient.
    """
    focus_scale = 2.0
    logits = beta * (
        (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    )
    is_correct = policy_chosen_logps > policy_rejected_logps
    logistic_losses = -F.logsigmoid(logits)
    hinge_losses = torch.relu(1.0 - logits)
    return torch.where(is_correct, logistic_losses / focus_scale, hinge_losses * focus_scale)


def cell_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """CELL (combined exponential + logistic loss): 0.5 * exp(-z) + 0.5 * -logsigmoid(z), z = beta * margin.

    Source: Lu et al., arXiv:2406.08414, Appendix; official code combined_exp_logistic_loss.
    No TRL loss_type.
    """
    alpha = 0.5
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    exp_losses = torch.exp(-beta * logits)
    log_losses = -F.logsigmoid(beta * logits)
    return alpha * exp_losses + (1.0 - alpha) * log_losses


def dbaql_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DBAQL (dynamic blended adaptive quantile loss): logistic/exponential blend set by batch variance.

    With z = beta * margin: c = sigmoid(var(z / 0.05)); loss = c * -logsigmoid(z / 0.9) + (1 - c) * exp(-0.9 z).
    Source: Lu et al., arXiv:2406.08414, Appendix; official code dynamic_blended_adaptive_quantile_loss.
    No TRL loss_type. Batch-coupled through the variance (unbiased, torch default; gradients flow through
    it, as in the code). Departure, only where the official code gives NaN: a batch of one pair has no
    spread, so var = 0 there (c = 0.5).
    """
    temperature = 0.9
    dynamic_blend_rate = 1.0
    logits = beta * (
        (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    )
    if logits.numel() > 1:
        logits_variability = (logits / 0.05).var()
    else:
        logits_variability = torch.zeros((), dtype=logits.dtype, device=logits.device)
    dynamic_blend_coeff = torch.sigmoid(logits_variability) * dynamic_blend_rate
    logistic_loss = -F.logsigmoid(logits / temperature)
    exp_loss = torch.exp(-logits * temperature)
    return dynamic_blend_coeff * logistic_loss + (1.0 - dynamic_blend_coeff) * exp_loss


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

#: Short stable name -> loss function. Names are part of the archive format: never rename one.
LIBRARY: dict[str, Callable[..., torch.Tensor]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "slic": slic_loss,
    "kto_pair": kto_pair_loss,
    "robust_dpo": robust_dpo_loss,
    "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss,
    "bco_pair": bco_pair_loss,
    "sppo_hard": sppo_hard_loss,
    "apo_zero": apo_zero_loss,
    "aot_pair": aot_pair_loss,
    "discopop": discopop_loss,
    "padll": padll_loss,
    "aqfl": aqfl_loss,
    "cell": cell_loss,
    "dbaql": dbaql_loss,
    "aql": aql_loss,
    "pfl": pfl_loss,
}

#: Our name -> TRL 1.x DPOConfig.loss_type computing the same per-pair formula (with TRL_CONFIG below).
#: Left out: "ipo" (TRL 1.x length-normalises; equal only for one-token completions), "kto_pair" (TRL 0.x
#: only), and padll/aqfl/cell/dbaql/aql/pfl (not in TRL).
TRL_LOSS_TYPES: dict[str, str] = {
    "dpo": "sigmoid",
    "slic": "hinge",
    "robust_dpo": "robust",
    "exo_pair": "exo_pair",
    "nca_pair": "nca_pair",
    "bco_pair": "bco_pair",
    "sppo_hard": "sppo_hard",
    "apo_zero": "apo_zero",
    "aot_pair": "aot",
    "discopop": "discopop",
}

#: Extra DPOConfig fields (besides loss_type and beta) for TRL to compute the same loss as ours.
TRL_CONFIG: dict[str, dict[str, float]] = {
    "dpo": {"label_smoothing": 0.0},
    "slic": {},
    "robust_dpo": {"label_smoothing": 0.1},
    "exo_pair": {"label_smoothing": 1e-3},
    "nca_pair": {},
    "bco_pair": {},
    "sppo_hard": {},
    "apo_zero": {},
    "aot_pair": {"label_smoothing": 0.0},
    "discopop": {"discopop_tau": 0.05},
}


def library_names() -> list[str]:
    """The names in ``LIBRARY``, in their registry order."""
    return list(LIBRARY)


def library_code(name: str) -> str:
    """Standalone candidate source for the library loss ``name``.

    The import preamble followed by the function's own source (dedented); ``exec`` of it in a fresh
    namespace defines exactly one function. Raises ``KeyError`` listing the valid names if ``name`` is
    unknown.
    """
    try:
        fn = LIBRARY[name]
    except KeyError:
        raise KeyError(f"unknown library loss {name!r}; valid names: {', '.join(LIBRARY)}") from None
    return CANDIDATE_PREAMBLE + textwrap.dedent(inspect.getsource(fn))
