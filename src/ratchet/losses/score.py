"""SCoRe: two-stage multi-turn RL for intrinsic self-correction (Kumar et al. 2024, arXiv 2409.12917).

An episode is x -> y1 (attempt 1), then [x, y1, p] -> y2 (attempt 2, p a fixed self-correction
instruction); r1, r2 are the verifier's 0/1 rewards (docs/algorithms.md#score):

    Stage I:  max E[ r2 - beta2 KL(pi(.|x) || pi_ref(.|x)) ]           a strong KL on attempt 1 only
              (plus the default beta1 KL on attempt 2)
    Stage II: max E[ r1 + r2 + alpha (r2 - r1) - beta1 (KL_1 + KL_2) ]  the shaped bonus goes to attempt 2

Policy gradient with gamma = 0 (each attempt's return is its own turn's reward), REINFORCE over the
k episodes of a prompt. The paper does not fix a baseline in our notes; we use RLOO's leave-one-out
baseline per turn (Ahmadian et al. 2024; ``losses.rloo``), which leaves the expected gradient
unchanged. The KL terms enter the per-turn rewards as detached one-sample estimates
log pi(y|c) - log pi_ref(y|c), as in ``rloo``. Defaults: the paper's MATH settings (Table 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ratchet.losses._core import LossOutput
from ratchet.losses.rloo import rloo_advantages


@dataclass(frozen=True)
class SCoReParams:
    """Parameters of SCoRe (paper Table 5, MATH column)."""

    stage: int = 2
    """1: Stage I (initialisation: reward on attempt 2, attempt 1 held to the reference by beta2);
    2: Stage II (both attempts rewarded, shaped bonus). The loop sets it per round
    (``online.stage_one_rounds``)."""
    alpha: float = 10.0
    """Shaping coefficient of the bonus alpha * (r2 - r1) on attempt 2 (alpha > 1; paper: 10)."""
    beta1: float = 0.01
    """Default KL coefficient on every attempt (paper: 0.01)."""
    beta2: float = 0.1
    """Stage I KL coefficient on attempt 1 (paper: 0.1 on MATH, 0.25 on MBPP)."""

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.beta1 < 0 or self.beta2 < 0 or self.alpha < 0:
            raise ValueError(f"alpha, beta1, beta2 must be >= 0, got {self.alpha}, {self.beta1}, {self.beta2}")


def _stage_one(r1: Tensor, r2: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    return torch.zeros_like(r1), r2


def _stage_two(r1: Tensor, r2: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    return r1, r2 + alpha * (r2 - r1)


_SHAPING = {1: _stage_one, 2: _stage_two}


def score_rewards(first_rewards: Tensor, second_rewards: Tensor, *, stage: int, alpha: float) -> tuple[Tensor, Tensor]:
    """The per-turn task rewards of a stage, before KL: Stage I (0, r2); Stage II (r1, r2 + alpha (r2 - r1))."""
    return _SHAPING[stage](first_rewards, second_rewards, alpha)


def score_loss(*, policy_first_logps: Tensor, ref_first_logps: Tensor, policy_second_logps: Tensor,
               ref_second_logps: Tensor, first_rewards: Tensor, second_rewards: Tensor, stage: int, alpha: float,
               beta1: float, beta2: float) -> LossOutput:
    """Per-prompt SCoRe loss; every input is [N, k] (k episodes of each of N prompts).

        (t1, t2)  = score_rewards(r1, r2)                   Stage I: (0, r2); II: (r1, r2 + alpha (r2 - r1))
        t1~       = t1 - b1 * (log pi(y1|x) - log pi_ref(y1|x))           b1 = beta2 in Stage I, else beta1
        t2~       = t2 - beta1 * (log pi(y2|x,y1,p) - log pi_ref(y2|x,y1,p))
        A1, A2    = leave-one-out advantages of t1~, t2~ over the k episodes   (rloo_advantages)
        L(x)      = -1/k * sum_i [ A1_i log pi(y1_i|x) + A2_i log pi(y2_i|x,y1_i,p) ]

    Metrics per prompt: attempt accuracies (mean r1, r2), wrong->right and right->wrong fractions,
    and the KL estimates of both attempts."""
    t1, t2 = score_rewards(first_rewards, second_rewards, stage=stage, alpha=alpha)
    kl1 = (policy_first_logps - ref_first_logps).detach()
    kl2 = (policy_second_logps - ref_second_logps).detach()
    a1 = rloo_advantages(t1 - (beta2 if stage == 1 else beta1) * kl1)
    a2 = rloo_advantages(t2 - beta1 * kl2)
    loss = -(a1 * policy_first_logps + a2 * policy_second_logps).mean(-1)
    r1, r2 = first_rewards.detach(), second_rewards.detach()
    return LossOutput(loss, {"rewards": (r1 + r2).mean(-1) / 2, "first_rewards": r1.mean(-1),
                             "second_rewards": r2.mean(-1), "wrong_to_right": ((r1 <= 0) & (r2 > 0)).float().mean(-1),
                             "right_to_wrong": ((r1 > 0) & (r2 <= 0)).float().mean(-1), "first_kl": kl1.mean(-1),
                             "second_kl": kl2.mean(-1)})
