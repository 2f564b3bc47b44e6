"""RLOO: REINFORCE with a leave-one-out baseline over the k samples of each prompt (on-policy).

Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
Human Feedback in LLMs", arXiv 2402.14740 (the RLOO estimator); the baseline is Kool,
van Hoof and Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!" (ICLR 2019
workshop DeepRLStructPred). The whole completion is one action (a bandit over sequences), so the
policy term reads the summed completion log-prob log pi_theta(y|x).

The KL penalty goes into the reward, as in the paper (its reward is r(x, y) - beta * KL) and in
TRL's ``RLOOTrainer`` (beta 0.05 there): a per-sequence estimate ``log pi(y|x) - log pi_ref(y|x)``
of KL(pi || pi_ref) on the sampled y, detached, so the KL acts through the advantage and gets
the same leave-one-out baseline as the task reward.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ratchet.losses._core import LossOutput


@dataclass(frozen=True)
class RLOOParams:
    """Parameters of the RLOO objective."""

    beta: float = 0.05
    """KL coefficient: the reward is r - beta * (log pi(y|x) - log pi_ref(y|x)); 0 drops the penalty
    (then reference log-probs are not computed). TRL's ``RLOOTrainer`` default."""

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def rloo_advantages(rewards: Tensor) -> Tensor:
    """Leave-one-out advantages: rewards [N, k] (k samples of each of N prompts) -> [N, k].

    A_i = r_i - 1/(k-1) * sum_{j != i} r_j  =  k/(k-1) * (r_i - mean_j r_j)   (Kool et al. 2019)."""
    k = rewards.shape[-1]
    if rewards.dim() != 2 or k < 2:
        raise ValueError(f"rewards must be [prompts, k] with k >= 2 samples per prompt, got {tuple(rewards.shape)}")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def rloo_loss(*, policy_logps: Tensor, ref_logps: Tensor, rewards: Tensor, beta: float) -> LossOutput:
    """Per-prompt RLOO loss; every input is [N, k]: k samples y_1..y_k ~ pi_theta(.|x) of each prompt.

        kl_i  = log pi_theta(y_i|x) - log pi_ref(y_i|x)            (detached; one-sample KL estimate)
        r~_i  = r_i - beta * kl_i                                   (KL in the reward, Ahmadian et al. 2024)
        A_i   = r~_i - 1/(k-1) * sum_{j != i} r~_j                  (leave-one-out baseline, Kool et al. 2019)
        L(x)  = -1/k * sum_i A_i * log pi_theta(y_i|x)              (A_i a constant)

    The gradient of L is the unbiased RLOO estimate of -grad E_y[r~(x, y)]. Returns loss [N]; metrics
    per prompt: mean reward, mean KL estimate, mean |advantage|."""
    kl = (policy_logps - ref_logps).detach()
    advantages = rloo_advantages(rewards - beta * kl)
    loss = -(advantages * policy_logps).mean(-1)
    return LossOutput(loss, {"rewards": rewards.mean(-1).detach(), "kl": kl.mean(-1),
                             "advantage_abs": advantages.abs().mean(-1)})
