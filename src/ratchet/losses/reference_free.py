"""Pairwise losses that need no reference model: SimPO and ORPO.

Both work on *length-averaged* log-probs, so they take the summed log-probs plus the completion
token counts `chosen_lengths` / `rejected_lengths` and average here (the one place it matters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, reward_metrics


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, switching form at -log 2 to avoid cancellation (Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


# ------------------------------------------------------------------------------------------- SimPO
@dataclass(frozen=True)
class SimPOParams:
    """Parameters of SimPO (Meng, Xia, Chen 2024); defaults are the released Llama-3-8B-Base setting."""

    beta: float = 2.0
    """Scale of the length-averaged reward beta * avglogp(y)."""
    gamma_beta_ratio: float = 0.5
    """Target margin divided by beta (gamma = gamma_beta_ratio * beta), as in the official code."""


def simpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float,
    gamma_beta_ratio: float,
) -> LossOutput:
    """Simple Preference Optimization, L = -log sigma(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma).

    Source: Meng, Xia, Chen 2024, "SimPO" (arXiv 2405.14734), eq. 6; code princeton-nlp/SimPO
    (`logits = pi_logratios - gamma_beta_ratio`, then `-logsigmoid(beta * logits)`). The optional
    SFT term and label smoothing of the official trainer are left out (add `sft` for the former).
    TRL: experimental `CPOTrainer(loss_type="simpo")`, whose `simpo_gamma` is gamma, not gamma/beta.
    """
    avg_w = policy_chosen_logps / chosen_lengths.clamp(min=1)
    avg_l = policy_rejected_logps / rejected_lengths.clamp(min=1)
    loss = -F.logsigmoid(beta * (avg_w - avg_l - gamma_beta_ratio))
    return LossOutput(loss, reward_metrics(beta, avg_w, avg_l))


# -------------------------------------------------------------------------------------------- ORPO
@dataclass(frozen=True)
class ORPOParams:
    """Parameters of ORPO (Hong, Lee, Thorne 2024)."""

    lam: float = 0.1
    """lambda, the weight of the odds-ratio term against the NLL term; 0.1 in the released Mistral
    script (TRL calls it `beta`)."""


def orpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    lam: float,
) -> LossOutput:
    """Odds Ratio Preference Optimization, L = NLL(y_w) - lambda log sigma(log odds(y_w) - log odds(y_l)).

    With p = exp(avglogp(y)), odds(y) = p / (1 - p), so log odds = avglogp - log(1 - exp(avglogp)).
    Source: Hong, Lee, Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
    (arXiv 2403.07691), eqs. 4-7; code xfactlab/orpo. NLL(y_w) here is the per-sequence token mean
    -avglogp(y_w); the official and TRL trainers use the token mean over the whole batch, which is
    the same when the caller averages examples of equal length. Needs length-averaged log-probs,
    otherwise p underflows.
    """
    avg_w = policy_chosen_logps / chosen_lengths.clamp(min=1)
    avg_l = policy_rejected_logps / rejected_lengths.clamp(min=1)
    log_odds = (avg_w - _log1mexp(avg_w)) - (avg_l - _log1mexp(avg_l))
    loss = -avg_w - lam * F.logsigmoid(log_odds)
    metrics = reward_metrics(lam, avg_w, avg_l)
    metrics["log_odds_ratio"] = log_odds.detach()
    metrics["nll"] = -avg_w.detach()
    return LossOutput(loss, metrics)
