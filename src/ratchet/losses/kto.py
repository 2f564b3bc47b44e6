"""KTO, the one loss here on unpaired data: each example is a completion labelled desirable or not.

Owns `kto_loss` and `kto_kl_baseline`, the estimate of the reference point z0 that the caller
computes from mismatched (prompt, completion) pairs and passes in. Knows nothing about how those
mismatched pairs are built (TRL shifts completions by one within the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ratchet.losses._core import LossOutput, logratio


@dataclass(frozen=True)
class KTOParams:
    """Parameters of KTO (Ethayarajh et al. 2024); defaults are the paper's."""

    beta: float = 0.1
    """Risk-aversion / KL strength of the value function."""
    desirable_weight: float = 1.0
    """lambda_D. Keep lambda_D n_D / (lambda_U n_U) in [1, 4/3] (the paper's advice; TRL warns outside it).
    The trainer sets both weights from the rows' labels (``balanced_weights``) unless a recipe sets either."""
    undesirable_weight: float = 1.0
    """lambda_U."""


def balanced_weights(n_desirable: int, n_undesirable: int) -> dict[str, float]:
    """lambda_D and lambda_U that make lambda_D n_D / (lambda_U n_U) = 1, the lower end of the paper's
    advised [1, 4/3] (Ethayarajh et al. 2024, section 4.2): the rarer class is weighted up, the other
    keeps weight 1. Why it matters: a self-generated KTO set is as unbalanced as the model's accuracy
    (32 arithmetic prompts x 8 samples gave 14 desirable and 50 undesirable rows), and unweighted the
    undesirable rows' push on their shared end-of-turn token made 62 of 100 held-out answers run past
    the token budget (docs/evidence.md). Either count 0: both weights 1 (nothing to balance).

        balanced_weights(14, 50) == {"desirable_weight": 50 / 14, "undesirable_weight": 1.0}
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    ratio = n_undesirable / n_desirable
    return {"desirable_weight": max(ratio, 1.0), "undesirable_weight": max(1.0 / ratio, 1.0)}


def kto_kl_baseline(policy_kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """z0 = max(0, mean_j [log pi_theta(y'_j|x_j) - log pi_ref(y'_j|x_j)]) over mismatched pairs, detached.

    The paper estimates KL(pi_theta || pi_ref) with completions y'_j taken from other prompts in the
    batch and does not back-propagate through it. Returns a scalar tensor.
    Under data parallelism, average across devices before calling `kto_loss` (TRL gathers it).
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def kto_loss(
    *,
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    kl_baseline: Tensor,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
) -> LossOutput:
    """Kahneman-Tversky Optimization, L = lambda_y - v(x, y) with r = log pi_theta(y|x) - log pi_ref(y|x):

        v = lambda_D sigma(beta (r - z0))   if y is desirable (labels True)
        v = lambda_U sigma(beta (z0 - r))   otherwise

    Source: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
    (arXiv 2402.01306), the KTO loss of section 4 (TRL cites it as eq. 7); TRL
    `KTOTrainer(loss_type="kto")` computes the same per example.
    `kl_baseline` is z0 (scalar or [B]); it is detached and clamped at 0 here, so passing the raw mean
    is also correct. Value at pi_theta = pi_ref with z0 = 0: lambda_y / 2.
    """
    r = logratio(policy_logps, ref_logps)
    z0 = kl_baseline.detach().clamp(min=0)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    loss = torch.where(labels.bool(), desirable, undesirable)
    rewards = beta * r.detach()
    metrics = {
        "rewards": rewards,
        "chosen_rewards": rewards[labels.bool()],
        "rejected_rewards": rewards[~labels.bool()],
        "kl_baseline": z0,
    }
    return LossOutput(loss, metrics)
