"""Self-play losses for general (possibly non-Bradley-Terry) preferences: INPO and SPPO.

Both are squared regressions used iteratively: in round t the reference model is the previous
iterate pi_t, so `ref_*` here means pi_t. INPO also keeps a fixed KL anchor (the initial model),
read as `anchor_*`. Generating the on-policy pairs and estimating win rates is the data builder's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ratchet.losses._core import LossOutput, check_unit_interval, logratio, reward_metrics


# -------------------------------------------------------------------------------------------- INPO
@dataclass(frozen=True)
class INPOParams:
    """Parameters of INPO; defaults are the paper's (Appendix B)."""

    eta: float = 0.005
    """eta: the OMD step is 1/eta and the target margin is 1/(2 eta); the paper's grid
    {0.1, 0.01, 0.0075, 0.005, 0.002} picked 0.005."""
    tau_over_eta: float = 1 / 3
    """tau / eta, the weight of the fixed KL anchor in the geometric-mixture reference (paper: tau = eta/3).
    0 drops the KL term (pure OMD against pi_t); 1 makes the anchor the whole reference."""

    def __post_init__(self) -> None:
        check_unit_interval("tau_over_eta", self.tau_over_eta)


def inpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    anchor_chosen_logps: Tensor,
    anchor_rejected_logps: Tensor,
    eta: float,
    tau_over_eta: float,
) -> LossOutput:
    """Iterative Nash Policy Optimization, L = (h_t - 1/(2 eta))^2 with

        h_t = log pi(y_w)/pi(y_l) - (tau/eta) log anchor(y_w)/anchor(y_l) - (1 - tau/eta) log pi_t(y_w)/pi_t(y_l)

    i.e. IPO against the geometric mixture anchor^(tau/eta) pi_t^(1 - tau/eta).
    Source: Zhang et al. 2024, "Iterative Nash Policy Optimization" (arXiv 2407.00617), the per-round
    loss L_t (section 4). `ref_*` are pi_t (the previous iterate), `anchor_*` the fixed pi_ref; in round 1
    both are the initial model. Ambiguity: the paper writes summed log-probs, so the target 1/(2 eta)
    is 100 nats at eta = 0.005; whether the official runs normalised by length is unknown.
    """
    h_w = logratio(policy_chosen_logps, ref_chosen_logps)
    h_l = logratio(policy_rejected_logps, ref_rejected_logps)
    anchor_shift = (ref_chosen_logps - anchor_chosen_logps) - (ref_rejected_logps - anchor_rejected_logps)
    # log pi/pi_t - (tau/eta) log anchor/pi_t = log pi/mixture, written against pi_t to reuse h_w, h_l.
    h_t = h_w - h_l + tau_over_eta * anchor_shift
    loss = (h_t - 1 / (2 * eta)) ** 2
    return LossOutput(loss, reward_metrics(eta, h_w, h_l))


# -------------------------------------------------------------------------------------------- SPPO
@dataclass(frozen=True)
class SPPOParams:
    """Parameters of SPPO; defaults are the released code's (uclaml/SPPO)."""

    beta: float = 0.001
    """Inverse of the step size eta = 1/beta (eta = 1000 in the released runs)."""


def sppo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_win_rates: Tensor,
    rejected_win_rates: Tensor,
    beta: float,
) -> LossOutput:
    """Self-Play Preference Optimization,
    L = 1/2 [ (h(y_w) - (P_w - 1/2)/beta)^2 + (h(y_l) - (P_l - 1/2)/beta)^2 ], h = log pi_theta/pi_t.

    P_w, P_l (`*_win_rates`) estimate P(y > pi_t | x), e.g. the mean pairwise win probability of y
    against the K samples for the prompt, self-comparison (1/2) included.
    Source: Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment"
    (arXiv 2405.00675), eq. 4.7; the 1/2 factor follows uclaml/SPPO `sppo/trainer.py`
    (`losses = (loss_w + loss_l)/2`). TRL's `sppo_hard` is P_w = 1, P_l = 0 *without* the 1/2.
    """
    h_w = logratio(policy_chosen_logps, ref_chosen_logps)
    h_l = logratio(policy_rejected_logps, ref_rejected_logps)
    loss_w = (h_w - (chosen_win_rates - 0.5) / beta) ** 2
    loss_l = (h_l - (rejected_win_rates - 0.5) / beta) ** 2
    return LossOutput(0.5 * (loss_w + loss_l), reward_metrics(beta, h_w, h_l))
