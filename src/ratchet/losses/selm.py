"""SELM (Zhang et al. 2024): DPO plus an optimism term that lowers the likelihood of the reference
model's own response, pushing mass toward unexplored high-reward responses.

Besides the pair it reads y_ref, the reference model's own (greedy) response to the same prompt,
which the data builder keeps next to the chosen and rejected responses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, logratio, reward_metrics


@dataclass(frozen=True)
class SELMParams:
    """Parameters of SELM; defaults are the paper's Zephyr setting (Appendix D)."""

    beta: float = 0.01
    """DPO's KL strength."""
    alpha: float = 0.001
    """Optimism coefficient; the effective weight on log pi_theta(y_ref) is alpha * beta.
    0.001 for Zephyr, 0.0001 for Llama-3-8B-Instruct; grid searched {5e-3, 1e-3, 5e-4, 1e-4}."""


def selm_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    policy_ref_response_logps: Tensor,
    ref_ref_response_logps: Tensor,
    beta: float,
    alpha: float,
) -> LossOutput:
    """Self-Exploring LM loss, L = -log sigma(beta Delta) + alpha beta (log pi_theta(y_ref|x) - log pi_ref(y_ref|x)).

    Source: Zhang et al. 2024, "Self-Exploring Language Models: Active Preference Elicitation for Online
    Alignment" (arXiv 2405.19332), eq. 4.2; code shenao-zhang/SELM `optimistic_dpo_loss`, whose form
    (with the constant pi_ref term, so the value at pi_theta = pi_ref is log 2) is used here.
    `*_ref_response_logps` are the summed log-probs of y_ref ~ pi_ref(.|x).
    """
    h_w = logratio(policy_chosen_logps, ref_chosen_logps)
    h_l = logratio(policy_rejected_logps, ref_rejected_logps)
    h_ref = logratio(policy_ref_response_logps, ref_ref_response_logps)
    dpo = -F.logsigmoid(beta * (h_w - h_l))
    optimism = alpha * beta * h_ref
    metrics = reward_metrics(beta, h_w, h_l)
    metrics["ref_response_rewards"] = beta * h_ref.detach()
    metrics["optimism_loss"] = optimism.detach()
    return LossOutput(dpo + optimism, metrics)
