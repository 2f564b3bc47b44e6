"""f-DPO (Wang et al. 2023): DPO with the reverse-KL regulariser replaced by another f-divergence.

The implicit reward becomes beta f'(u) with u = pi_theta(y|x) / pi_ref(y|x) instead of beta log u.
Not f-DPG (Go et al. 2023), the on-policy f-divergence policy gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, logratio, reward_metrics

Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]


@dataclass(frozen=True)
class FDPOParams:
    """Parameters of f-DPO."""

    beta: float = 0.1
    """KL-type regularisation strength, as in DPO."""
    divergence: Divergence = "reverse_kl"
    """Which f: "reverse_kl" (= DPO), "forward_kl", "js" (Jensen-Shannon) or "alpha"."""
    alpha: float = 0.5
    """alpha of the alpha-divergence, in the paper's parametrisation f'(u) = (1 - u^-alpha)/alpha:
    alpha -> 0 is reverse KL, alpha = 1 is forward KL. 0.5 is the midpoint (also TRL v1's default,
    whose coefficient is 1 - alpha in this parametrisation). Ignored unless divergence == "alpha"."""

    def __post_init__(self) -> None:
        if self.divergence not in ("reverse_kl", "forward_kl", "js", "alpha"):
            raise ValueError(f"divergence must be reverse_kl, forward_kl, js or alpha, got {self.divergence!r}")
        if self.divergence == "alpha" and not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1] for the alpha-divergence, got {self.alpha}")


def _reverse_kl(h: Tensor, alpha: float) -> Tensor:
    return h  # f(u) = u log u, f'(u) = 1 + log u; the constant cancels in the difference


def _forward_kl(h: Tensor, alpha: float) -> Tensor:
    return -torch.exp(-h)  # f(u) = -log u, f'(u) = -1/u


def _js(h: Tensor, alpha: float) -> Tensor:
    return math.log(2) + F.logsigmoid(h)  # f'(u) = log(2u / (1 + u)) = log 2 + log sigma(log u)


def _alpha(h: Tensor, alpha: float) -> Tensor:
    return -torch.expm1(-alpha * h) / alpha  # f'(u) = (1 - u^-alpha) / alpha


# The score f'(u) written as a function of h = log u, per divergence (Wang et al. 2023, section 4).
F_PRIME = {"reverse_kl": _reverse_kl, "forward_kl": _forward_kl, "js": _js, "alpha": _alpha}


def fdpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    divergence: str,
    alpha: float,
) -> LossOutput:
    """f-DPO, L = -log sigma(beta f'(u_w) - beta f'(u_l)), u = pi_theta(y|x) / pi_ref(y|x).

    Source: Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
    Diverse Divergence Constraints" (arXiv 2309.16240), section 4 (the f-DPO objective and its table of
    f'). Reverse KL is DPO.
    No clamping: forward KL and alpha grow like exp(-alpha h) for very negative h, so keep h moderate
    (TRL clamps the alpha-divergence exponent at 80 in fp32). Metrics report beta * h, as TRL does.
    """
    h_w = logratio(policy_chosen_logps, ref_chosen_logps)
    h_l = logratio(policy_rejected_logps, ref_rejected_logps)
    score = F_PRIME[divergence]
    loss = -F.logsigmoid(beta * (score(h_w, alpha) - score(h_l, alpha)))
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))
