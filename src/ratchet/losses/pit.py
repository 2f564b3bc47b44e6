"""PIT (Wang et al. 2024): learn to improve on a reference response from reward *gaps*, not rewards.

PIT's improver M(y | x, y_ref) writes a response better than a reference response y_ref; its reward
R(x, y, y_ref) is the quality gap of y over y_ref. Here the improver is the policy under a revision
prompt holding y_ref in the draft slot (``data.revision``, shared with SRPO), and the gap reward is
its implicit DPO reward under that prompt, so the gap model and the improver are one set of
weights. Knows nothing about the revision prompt template; the data builder owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, logratio, reward_metrics


@dataclass(frozen=True)
class PITParams:
    """Parameters of PIT's gap-ordering loss (PIT reports no value for them; see the loss)."""

    beta: float = 0.1
    """Scale of the implicit gap reward beta * log pi/pi_ref (the DPO default; PIT's RL KL weight
    is not reported)."""


def pit_loss(
    *,
    policy_revise_chosen_from_rejected_logps: Tensor,
    policy_revise_chosen_from_chosen_logps: Tensor,
    policy_revise_rejected_from_rejected_logps: Tensor,
    policy_revise_rejected_from_chosen_logps: Tensor,
    ref_revise_chosen_from_rejected_logps: Tensor,
    ref_revise_chosen_from_chosen_logps: Tensor,
    ref_revise_rejected_from_rejected_logps: Tensor,
    ref_revise_rejected_from_chosen_logps: Tensor,
    beta: float,
) -> LossOutput:
    """PIT's reward-gap ordering on one preference pair y_w > y_l, with the implicit gap reward

        G(y, y_ref) = beta [log pi(y | x, y_ref) - log pi_ref(y | x, y_ref)]   (revision prompt, draft y_ref)

    and the five orderings PIT trains its gap reward model with (Wang et al. 2024, "Enabling
    Language Models to Implicitly Learn Self-Improvement From Data", arXiv 2310.00898, ICLR 2024;
    docs/algorithms.md#pit), each a Bradley-Terry term:

        G(w,l) > G(w,w),  G(w,l) > G(l,l),  G(w,l) > G(l,w),  G(w,w) > G(l,w),  G(l,l) > G(l,w)
        L = sum over the five (a, b) of -log sigma(G(a) - G(b))

    (improving the loser into the winner is the largest gap; any response over itself is no gap;
    turning the winner into the loser is the smallest). The orderings are from a review of the
    paper [R]; writing each as a BT term and using the DPO implicit reward as the gap model, which
    makes the policy the improver M_PIT(y | x, y_ref) without PIT's separate reward model and RL
    stage, are derived [D]. Two of the terms (G(w,l) vs G(l,l); G(w,w) vs G(l,w)) compare answers
    under the same prompt, where DPO's log-partition term cancels; the other three compare across
    drafts and are taken as written. Value at pi = pi_ref: 5 log 2.
    """
    g_wl = logratio(policy_revise_chosen_from_rejected_logps, ref_revise_chosen_from_rejected_logps)
    g_ww = logratio(policy_revise_chosen_from_chosen_logps, ref_revise_chosen_from_chosen_logps)
    g_ll = logratio(policy_revise_rejected_from_rejected_logps, ref_revise_rejected_from_rejected_logps)
    g_lw = logratio(policy_revise_rejected_from_chosen_logps, ref_revise_rejected_from_chosen_logps)
    orderings = ((g_wl, g_ww), (g_wl, g_ll), (g_wl, g_lw), (g_ww, g_lw), (g_ll, g_lw))
    loss = sum(F.softplus(-beta * (a - b)) for a, b in orderings)  # -log sigma(z) = softplus(-z)
    # chosen/rejected rewards: the largest gap (loser -> winner) and the smallest (winner -> loser)
    metrics = reward_metrics(beta, g_wl, g_lw)
    metrics["orderings_correct"] = sum((a > b).type_as(g_wl) for a, b in orderings).detach() / len(orderings)
    return LossOutput(loss, metrics)
