"""SRPO (Choi et al. 2024): one set of weights acts as a generator pi(y|x) and as a reviser
pi(y'|y, x) prompted with a draft; the loss mixes a self-improvement term and a robust term.

Reads six sequences per pair, each under the policy and the reference: x -> y_w, x -> y_l, and the
four revisions (y_l -> y_w, y_l -> y_l, y_w -> y_w, y_w -> y_l). Knows nothing about the revision
prompt template; the data builder owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ratchet.losses._core import LossOutput, check_unit_interval, logratio, reward_metrics


@dataclass(frozen=True)
class SRPOParams:
    """Parameters of SRPO. The paper's values were not found; these are TRL PR #1772's (see below)."""

    beta: float = 0.01
    """KL strength; 0.01 is the effective default of the community implementation (TRL PR #1772)."""
    alpha: float = 0.8
    """Mixing weight: alpha * L_SI + (1 - alpha) * L_rob; 0.8 is hard-coded in TRL PR #1772.
    alpha = 1 trains only the reviser; alpha = 0 only the robust (generator + reviser) term."""

    def __post_init__(self) -> None:
        check_unit_interval("alpha", self.alpha)


def srpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    policy_revise_chosen_from_rejected_logps: Tensor,
    policy_revise_rejected_from_rejected_logps: Tensor,
    policy_revise_chosen_from_chosen_logps: Tensor,
    policy_revise_rejected_from_chosen_logps: Tensor,
    ref_revise_chosen_from_rejected_logps: Tensor,
    ref_revise_rejected_from_rejected_logps: Tensor,
    ref_revise_chosen_from_chosen_logps: Tensor,
    ref_revise_rejected_from_chosen_logps: Tensor,
    beta: float,
    alpha: float,
) -> LossOutput:
    """Self-Improving Robust Preference Optimization, with r(y) = log pi/pi_ref (x -> y) and
    r+(y'|y) = log pi/pi_ref (x, draft y -> y'):

        L_SI  = (beta [r+(y_w|y_l) - r+(y_l|y_l)] - 1/2)^2 + (beta [r+(y_w|y_w) - r+(y_l|y_w)] - 1/2)^2
        L_rob = (beta [r+(y_w|y_l) + r(y_w) - r+(y_l|y_w) - r(y_l)] - 1)^2
        L     = alpha L_SI + (1 - alpha) L_rob

    Source: Choi et al. 2024, "Self-Improving Robust Preference Optimization" (arXiv 2406.01660).
    The paper's equations could not be retrieved; this is the offline loss derived from its min-max
    objective (identities P(y|y) = 1/2 and 2P - 1, docs/algorithms.md#srpo-objective), which agrees term for term
    with the unmerged TRL PR #1772 `srpo_loss`. Hard labels P(y_w > y_l) = 1; log-probs are sums (as in
    the PR; pass length-averaged log-probs for a mean form). Value at pi = pi_ref: 0.5 alpha + (1 - alpha).
    """
    r_w = logratio(policy_chosen_logps, ref_chosen_logps)
    r_l = logratio(policy_rejected_logps, ref_rejected_logps)
    rev_w_from_l = logratio(policy_revise_chosen_from_rejected_logps, ref_revise_chosen_from_rejected_logps)
    rev_l_from_l = logratio(policy_revise_rejected_from_rejected_logps, ref_revise_rejected_from_rejected_logps)
    rev_w_from_w = logratio(policy_revise_chosen_from_chosen_logps, ref_revise_chosen_from_chosen_logps)
    rev_l_from_w = logratio(policy_revise_rejected_from_chosen_logps, ref_revise_rejected_from_chosen_logps)
    # Revising the loser should move to y_w; revising the winner should stay at y_w (target P - 1/2).
    si = (beta * (rev_w_from_l - rev_l_from_l) - 0.5) ** 2 + (beta * (rev_w_from_w - rev_l_from_w) - 0.5) ** 2
    # The log-partition terms cancel in this combination, leaving P(y_w > y_l) - P(y_l > y_w) = 1.
    rob = (beta * (rev_w_from_l + r_w - rev_l_from_w - r_l) - 1.0) ** 2
    metrics = reward_metrics(beta, r_w, r_l)
    metrics["si_loss"], metrics["robust_loss"] = si.detach(), rob.detach()
    return LossOutput(alpha * si + (1 - alpha) * rob, metrics)
