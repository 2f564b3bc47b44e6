"""The DPO family on offline pairs with a reference model: DPO, DPOP, cDPO, rDPO, IPO, hinge (SLiC/RSO) and NCA.

Every function here reads summed completion log-probs of shape [B] (prompt tokens masked) and returns
a per-example loss of shape [B]. Notation (docs/objectives.md, docs/algorithms.md#conventions):
h(y) = log pi_theta(y|x) - log pi_ref(y|x) and Delta = h(y_w) - h(y_l).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ratchet.losses._core import LossOutput, check_unit_interval, logratio, reward_metrics


def _delta(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor
) -> tuple[Tensor, Tensor]:
    """(h_w, h_l): the chosen and rejected log-ratios against the reference."""
    return logratio(policy_chosen_logps, ref_chosen_logps), logratio(policy_rejected_logps, ref_rejected_logps)


# --------------------------------------------------------------------------------------------- DPO
@dataclass(frozen=True)
class DPOParams:
    """Parameters of DPO (Rafailov et al. 2023)."""

    beta: float = 0.1
    """KL-regularisation strength; 0.1 is the paper's default for dialogue (0.5 for TL;DR)."""


def dpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> LossOutput:
    """Direct Preference Optimization, L = -log sigma(beta * Delta).

    Source: Rafailov et al. 2023, "Direct Preference Optimization", eq. 7 (arXiv 2305.18290).
    Value at pi_theta = pi_ref: log 2. TRL: `DPOConfig(loss_type="sigmoid")`.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(beta * (h_w - h_l))
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))


# -------------------------------------------------------------------------------------------- DPOP
@dataclass(frozen=True)
class DPOPParams:
    """Parameters of DPO-Positive (Pal et al. 2024)."""

    beta: float = 0.1
    """KL-regularisation strength, as in DPO."""
    lam: float = 50.0
    """Weight of the penalty on the chosen log-ratio falling below 0 (the paper's lambda; 50 is the
    value we read in its experiments section). lam = 0 is DPO."""

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


def dpop_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    lam: float,
) -> LossOutput:
    """DPO-Positive, L = -log sigma(beta * (Delta - lam * max(0, -h_w))).

    Source: Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive"
    (arXiv 2402.13228), eq. 3. Why: DPO only reads Delta, so on pairs that differ in a few tokens (a
    wrong sum against a right one) both likelihoods can fall as long as the rejected falls faster; the
    mass goes elsewhere (on arithmetic, to answers that loop past the token budget: docs/evidence.md).
    The penalty is zero while pi_theta(y_w) >= pi_ref(y_w) and pushes y_w back up below it.
    Value at pi_theta = pi_ref: log 2 (the penalty is 0). No TRL loss_type.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    penalty = torch.relu(-h_w)
    loss = -F.logsigmoid(beta * (h_w - h_l - lam * penalty))
    metrics = reward_metrics(beta, h_w, h_l)
    metrics["chosen_below_reference"] = torch.sign(penalty.detach())  # 1 where the penalty is active
    return LossOutput(loss, metrics)


# -------------------------------------------------------------------------------------------- cDPO
@dataclass(frozen=True)
class CDPOParams:
    """Parameters of conservative DPO (label smoothing)."""

    beta: float = 0.1
    """KL-regularisation strength, as in DPO."""
    epsilon: float = 0.1
    """Assumed probability that a label is flipped. The cDPO note fixes no value; 0.1 is our choice
    (the reward-augmented-data paper used 0.3). epsilon = 0 is DPO."""

    def __post_init__(self) -> None:
        check_unit_interval("epsilon", self.epsilon)


def cdpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    epsilon: float,
) -> LossOutput:
    """Conservative DPO, L = -(1 - eps) log sigma(beta Delta) - eps log sigma(-beta Delta).

    Source: E. Mitchell 2023, "A note on DPO with noisy preferences and relationship to IPO"
    (ericmitchell.ai/cdpo.pdf). The per-example optimum is finite: Delta* = log((1 - eps)/eps) / beta.
    TRL v0.x applied this as `label_smoothing` on "sigmoid"; TRL v1 dropped it, so no TRL parity.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (h_w - h_l)
    loss = -(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z)
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))


# -------------------------------------------------------------------------------------------- rDPO
@dataclass(frozen=True)
class RDPOParams:
    """Parameters of provably robust DPO (Chowdhury, Kini, Natarajan 2024)."""

    beta: float = 0.1
    """KL-regularisation strength; 0.1 in the paper's experiments (as mapped by TRL's paper index)."""
    epsilon: float = 0.1
    """Known (or estimated) label-flip rate, must be < 0.5; 0.1 as in the paper's experiments."""

    def __post_init__(self) -> None:
        check_unit_interval("epsilon", self.epsilon, upper=0.5, closed_upper=False)


def rdpo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    epsilon: float,
) -> LossOutput:
    """Robust DPO, L = [(1 - eps) l(Delta) - eps l(-Delta)] / (1 - 2 eps), with l(z) = -log sigma(beta z).

    Source: Chowdhury et al. 2024, "Provably Robust DPO" (arXiv 2403.00409), eq. 8: the unbiased
    de-noised loss, whose expectation over random flips equals the clean DPO loss. Unlike cDPO it is
    unbounded below per example (slope -eps beta / (1 - 2 eps) as Delta -> inf); watch the margins.
    TRL: `loss_type="robust"` with `label_smoothing=eps`.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (h_w - h_l)
    loss = ((1 - epsilon) * -F.logsigmoid(z) - epsilon * -F.logsigmoid(-z)) / (1 - 2 * epsilon)
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))


# --------------------------------------------------------------------------------------------- IPO
@dataclass(frozen=True)
class IPOParams:
    """Parameters of IPO (Azar et al. 2024)."""

    tau: float = 0.1
    """Regularisation strength tau; the target margin is 1/(2 tau). The paper is theory-only; 0.1 is
    TRL's default beta, which plays the role of tau."""
    length_normalized: bool = False
    """If True, divide each log-ratio by its completion length before squaring (TRL v1's form, which
    TRL says the IPO authors confirmed). False is the paper's eq. 17 on summed log-probs."""


def ipo_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    tau: float,
    length_normalized: bool,
) -> LossOutput:
    """Identity Preference Optimization, L = (Delta - 1/(2 tau))^2.

    Source: Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences" (AISTATS), eq. 17. Ambiguity: the paper writes sequence log-likelihoods (sums);
    TRL v1 divides h_w and h_l by their token counts. Default here: sums; `length_normalized=True`
    gives TRL's form (`chosen_lengths`/`rejected_lengths` then required, clamped at >= 1 as in TRL).
    Value at pi_theta = pi_ref: 1/(4 tau^2) in either form.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    s_w, s_l = h_w, h_l
    if length_normalized:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo with length_normalized=True needs chosen_lengths and rejected_lengths")
        s_w, s_l = h_w / chosen_lengths.clamp(min=1), h_l / rejected_lengths.clamp(min=1)
    loss = (s_w - s_l - 1 / (2 * tau)) ** 2
    # The IPO optimum is pi_ref * exp(Psi / tau), so tau * h is the implicit reward (on raw sums).
    return LossOutput(loss, reward_metrics(tau, h_w, h_l))


# ------------------------------------------------------------------------------------------- hinge
@dataclass(frozen=True)
class HingeParams:
    """Parameters of the hinge loss of SLiC-HF / RSO."""

    beta: float = 0.05
    """Inverse margin gamma (the hinge is active while beta * margin < 1, i.e. SLiC's delta = 1/beta);
    0.05 is RSO's default gamma (Liu et al. 2024, section 5)."""
    reference_free: bool = False
    """If True, the margin is log pi(y_w) - log pi(y_l) (original SLiC, RSO "hinge"); if False it is
    Delta, the reference-normalised margin (RSO "hinge-norm", TRL `loss_type="hinge"`)."""


def hinge_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    beta: float,
    reference_free: bool,
) -> LossOutput:
    """SLiC-style hinge, L = max(0, 1 - beta * m), m = Delta (or the raw log-prob margin if reference-free).

    Sources: Zhao et al. 2023, "SLiC-HF" (arXiv 2305.10425), calibration loss without the SFT term;
    Liu et al. 2024, "Statistical Rejection Sampling Improves Preference Optimization" (RSO), eqs. 9-10.
    The SLiC regulariser -lambda log pi(y_ref) is left out, as RSO does; add the `sft` loss for it.
    Value at pi_theta = pi_ref (or at equal log-probs): 1.
    """
    if reference_free:
        h_w, h_l = policy_chosen_logps, policy_rejected_logps
    else:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("hinge with reference_free=False needs ref_chosen_logps and ref_rejected_logps")
        h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = torch.relu(1 - beta * (h_w - h_l))
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))


# --------------------------------------------------------------------------------------------- NCA
@dataclass(frozen=True)
class NCAParams:
    """Parameters of pairwise NCA (Chen et al. 2024)."""

    beta: float = 0.1
    """Reward scale r = beta * h. The paper's per-dataset values were not verified; 0.1 is TRL's default."""


def nca_loss(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> LossOutput:
    """Noise Contrastive Alignment, L = -log sigma(r_w) - 1/2 log sigma(-r_w) - 1/2 log sigma(-r_l), r = beta h.

    Source: Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards"
    (arXiv 2402.05369), the K = 2 pairwise NCA loss. Unlike DPO it pins the absolute reward of y_w,
    so the chosen likelihood does not fall. Value at pi_theta = pi_ref: 2 log 2.
    TRL: `loss_type="nca_pair"`.
    """
    h_w, h_l = _delta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * h_w, beta * h_l
    loss = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return LossOutput(loss, reward_metrics(beta, h_w, h_l))
