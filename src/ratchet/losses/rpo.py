"""RPO (Liu et al. 2024): DPO plus an SFT term on the baseline responses, which are the chosen ones.

Not to be confused with Pang et al.'s Iterative Reasoning PO, which TRL's old `rpo_alpha` named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, logratio, reward_metrics


@dataclass(frozen=True)
class RPOParams:
    """Parameters of RPO; defaults are the paper's (Appendix E.1)."""

    beta: float = 0.01
    """DPO's KL strength."""
    eta: float = 0.005
    """Weight of the SFT term (the paper selected 0.005)."""
    nll: Literal["sum", "token_mean"] = "sum"
    """"sum": the paper's eq. 4.8, eta * beta * (-log pi(y_w|x)) on the summed log-likelihood.
    "token_mean": TRL's mapping (`loss_type=["sigmoid", "sft"]`, `loss_weights=[1, eta]`),
    eta * (-log pi(y_w|x) / |y_w|); the two are not numerically the same."""

    def __post_init__(self) -> None:
        if self.nll not in ("sum", "token_mean"):
            raise ValueError(f"nll must be 'sum' or 'token_mean', got {self.nll!r}")


def rpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor | None = None,
    beta: float,
    eta: float,
    nll: str,
) -> LossOutput:
    """Regularized Preference Optimization, L = -log sigma(beta Delta) + eta beta (-log pi_theta(y_w|x)).

    Source: Liu et al. 2024, "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly
    an Adversarial Regularizer" (arXiv 2405.16436), eq. 4.8, with pi_base = the chosen responses (as in
    the paper's experiments). Option `nll="token_mean"` gives TRL's eta * token-mean form instead
    (needs `chosen_lengths`). TRL's token mean is over all chosen tokens of the batch; here it is per
    sequence, which agrees with TRL when every chosen completion in the batch has the same length.
    """
    h_w = logratio(policy_chosen_logps, ref_chosen_logps)
    h_l = logratio(policy_rejected_logps, ref_rejected_logps)
    dpo = -F.logsigmoid(beta * (h_w - h_l))
    if nll == "sum":
        sft = eta * beta * -policy_chosen_logps
    else:
        if chosen_lengths is None:
            raise ValueError("rpo with nll='token_mean' needs chosen_lengths")
        sft = eta * -policy_chosen_logps / chosen_lengths.clamp(min=1)
    metrics = reward_metrics(beta, h_w, h_l)
    metrics["dpo_loss"], metrics["sft_loss"] = dpo.detach(), sft.detach()
    return LossOutput(dpo + sft, metrics)
