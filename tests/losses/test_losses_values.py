"""Loss values: at pi_theta = pi_ref, and at non-trivial inputs derived by hand in the comments.

Shorthand: h = policy - ref (summed log-probs), Delta = h_w - h_l, softplus(z) = log(1 + e^z),
-log sigma(z) = softplus(-z). Useful constants: sigma(ln 3) = 3/4, sigma(-ln 3) = 1/4.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ratchet.losses import LOSSES

from ._helpers import at_reference, t

LN2, LN3 = math.log(2), math.log(3)


def run(name, **kwargs):
    """Call a registered loss with tensors and param overrides mixed in kwargs."""
    spec = LOSSES[name]
    fields = {f.name for f in dataclasses.fields(spec.params)}
    params = spec.make_params(**{k: v for k, v in kwargs.items() if k in fields})
    return spec.fn(**{k: v for k, v in kwargs.items() if k not in fields}, **dataclasses.asdict(params))


def pair(h_w, h_l, ref_w=-5.0, ref_l=-7.0):
    """Paired log-probs whose log-ratios are h_w and h_l (the reference values are arbitrary)."""
    return dict(
        policy_chosen_logps=t(ref_w + h_w), policy_rejected_logps=t(ref_l + h_l),
        ref_chosen_logps=t(ref_w), ref_rejected_logps=t(ref_l),
    )  # fmt: skip


def close(out, *expected):
    torch.testing.assert_close(out.loss, t(*expected), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------- values at pi = pi_ref
AT_REFERENCE = {
    "dpo": LN2,  # -log sigma(0)
    "dpop": LN2,  # -log sigma(0 - lam * max(0, 0))
    "cdpo": LN2,  # -(1-eps) log 1/2 - eps log 1/2
    "rdpo": LN2,  # [(1-eps) - eps] ln 2 / (1 - 2 eps)
    "ipo": 25.0,  # (0 - 1/(2*0.1))^2 = 1/(4 tau^2)
    "hinge": 1.0,  # max(0, 1 - 0)
    "nca": 2 * LN2,  # ln2 + ln2/2 + ln2/2
    "kto": None,  # 0.5 * lambda_y, checked per label below
    "selm": LN2,  # ln 2 + alpha beta * 0
    "srpo": 0.5 * 0.8 + 0.2,  # alpha * (1/4 + 1/4) + (1 - alpha) * 1 = 0.6
    "inpo": 1e4,  # (1/(2*0.005))^2
    "fdpo": LN2,  # every f' difference is 0 when u_w = u_l = 1
}


@pytest.mark.parametrize("name", sorted(AT_REFERENCE))
def test_value_at_reference(name):
    spec = LOSSES[name]
    x = at_reference(spec)
    if name == "kto":
        x["kl_baseline"] = torch.zeros((), dtype=torch.float64)
    out = spec.fn(**x, **dataclasses.asdict(spec.make_params()))
    expected = torch.full_like(out.loss, 0.5) if name == "kto" else torch.full_like(out.loss, AT_REFERENCE[name])
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)


def test_value_at_reference_sppo_defaults():
    # h = 0, beta = 0.001 (eta = 1000): 1/2 [(1000 (P_w - 1/2))^2 + (1000 (P_l - 1/2))^2]
    # P_w = 1, P_l = 0: 1/2 (500^2 + 500^2) = 250000;  P_w = 0.75, P_l = 0.5: 1/2 (250^2 + 0) = 31250.
    x = pair(0.0, 0.0) | {"chosen_win_rates": t(1.0), "rejected_win_rates": t(0.0)}
    close(run("sppo", **x), 250000.0)
    x = pair(0.0, 0.0) | {"chosen_win_rates": t(0.75), "rejected_win_rates": t(0.5)}
    close(run("sppo", **x), 31250.0)


def test_value_at_reference_fdpo_every_divergence():
    for divergence in ("reverse_kl", "forward_kl", "js", "alpha"):
        close(run("fdpo", **pair(0.0, 0.0), divergence=divergence), LN2)


def test_value_rpo_at_reference_is_ln2_plus_sft_term():
    # ln 2 + eta beta (-log pi(y_w)) = ln 2 + 0.005 * 0.01 * 10 = ln 2 + 5e-4
    close(run("rpo", **pair(0.0, 0.0, ref_w=-10.0)), LN2 + 5e-4)


# ------------------------------------------------------------------------------------- DPO family
def test_dpo_values():
    # beta 0.1, h_w = 1, h_l = -1: Delta = 2, -log sigma(0.2) = log(1 + e^-0.2) = 0.598138869...
    close(run("dpo", **pair(1.0, -1.0)), 0.5981388693815918)
    # beta 1, Delta = ln 3: -log(3/4) = ln(4/3);  Delta = -ln 3: -log(1/4) = ln 4.
    close(run("dpo", **pair(LN3, 0.0), beta=1.0), math.log(4 / 3))
    close(run("dpo", **pair(0.0, LN3), beta=1.0), math.log(4))


def test_dpop_values():
    # Chosen above the reference (h_w = 1 >= 0): no penalty, DPO's value -log sigma(0.2) = 0.5981388...
    close(run("dpop", **pair(1.0, -1.0)), 0.5981388693815918)
    # beta 1, lam 1, h_w = -ln 3, h_l = -3 ln 3: Delta = 2 ln 3, penalty max(0, ln 3) = ln 3;
    # z = 2 ln 3 - ln 3 = ln 3, -log sigma(ln 3) = ln(4/3). DPO alone would give -log sigma(2 ln 3) = ln(10/9).
    close(run("dpop", **pair(-LN3, -3 * LN3), beta=1.0, lam=1.0), math.log(4 / 3))
    close(run("dpo", **pair(-LN3, -3 * LN3), beta=1.0), math.log(10 / 9))
    # lam = 0 is DPO exactly.
    close(run("dpop", **pair(-LN3, 0.0), beta=1.0, lam=0.0), math.log(4))


def test_dpop_pushes_a_falling_chosen_up():
    # dL/dh_w = -beta (1 + lam) sigma(-z) for h_w < 0 (DPO: -beta sigma(-z)): at beta 1, lam 1, z = ln 3
    # (the case above), sigma(-ln 3) = 1/4, so dL/dh_w = -2 * 1/4 = -1/2: descent raises h_w twice as hard.
    h_w = torch.tensor([-LN3], dtype=torch.float64, requires_grad=True)
    x = pair(0.0, -3 * LN3) | {"policy_chosen_logps": h_w + -5.0}
    run("dpop", **x, beta=1.0, lam=1.0).loss.sum().backward()
    torch.testing.assert_close(h_w.grad, torch.tensor([-0.5], dtype=torch.float64))


def test_dpop_rejects_negative_lambda():
    with pytest.raises(ValueError, match="lam must be >= 0"):
        LOSSES["dpop"].make_params(lam=-1.0)


def test_cdpo_values_and_finite_optimum():
    # beta 1, eps 1/4, Delta = ln 3: -(3/4) ln(3/4) - (1/4) ln(1/4) = 0.2157615 + 0.3465736 = 0.5623351
    close(run("cdpo", **pair(LN3, 0.0), beta=1.0, epsilon=0.25), -0.75 * math.log(0.75) - 0.25 * math.log(0.25))
    # Delta = -ln 3 swaps the roles: -(3/4) ln(1/4) - (1/4) ln(3/4) = 1.0397208 + 0.0719205
    close(run("cdpo", **pair(0.0, LN3), beta=1.0, epsilon=0.25), -0.75 * math.log(0.25) - 0.25 * math.log(0.75))
    # d/dDelta = -(1-eps) sigma(-z) + eps sigma(z) = -(3/4)(1/4) + (1/4)(3/4) = 0 at Delta* = ln((1-eps)/eps) = ln 3.
    h_w = torch.tensor([LN3], dtype=torch.float64, requires_grad=True)
    x = pair(0.0, 0.0) | {"policy_chosen_logps": h_w + -5.0}
    run("cdpo", **x, beta=1.0, epsilon=0.25).loss.sum().backward()
    assert abs(h_w.grad.item()) < 1e-12


def test_rdpo_values():
    # beta 0.1, eps 0.1, Delta = 2: l(2) = 0.5981389, l(-2) = log(1 + e^0.2) = 0.7981389;
    # (0.9 * 0.5981389 - 0.1 * 0.7981389) / 0.8 = 0.5731389 (matches PEERS.md section 4.4)
    close(run("rdpo", **pair(1.0, -1.0), epsilon=0.1), (0.9 * 0.5981388693815918 - 0.1 * 0.7981388693815918) / 0.8)
    # beta 1, eps 1/4, Delta = ln 3: ((3/4) ln(4/3) - (1/4) ln 4) / (1/2) = (0.2157615 - 0.3465736) * 2 = -0.2616243
    # (negative: the per-example rDPO loss is unbounded below)
    close(run("rdpo", **pair(LN3, 0.0), beta=1.0, epsilon=0.25), 2 * (0.75 * math.log(4 / 3) - 0.25 * math.log(4)))


def test_ipo_values():
    # tau 0.5: target 1/(2 tau) = 1. Delta = 3: (3 - 1)^2 = 4;  Delta = 1: 0 (the minimum).
    close(run("ipo", **pair(2.0, -1.0), tau=0.5), 4.0)
    close(run("ipo", **pair(0.5, -0.5), tau=0.5), 0.0)
    # length-normalised (TRL form): h_w/|y_w| - h_l/|y_l| = 4/2 - (-2)/4 = 2.5; (2.5 - 1)^2 = 2.25
    lengths = {"chosen_lengths": torch.tensor([2]), "rejected_lengths": torch.tensor([4])}
    close(run("ipo", **pair(4.0, -2.0), **lengths, tau=0.5, length_normalized=True), 2.25)


def test_ipo_length_normalized_needs_lengths():
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        run("ipo", **pair(1.0, 0.0), length_normalized=True)


def test_hinge_values():
    # beta 0.5: Delta = 1 -> max(0, 1 - 0.5) = 0.5;  Delta = 3 -> max(0, -0.5) = 0.
    close(run("hinge", **pair(1.0, 0.0), beta=0.5), 0.5)
    close(run("hinge", **pair(2.0, -1.0), beta=0.5), 0.0)
    # reference-free (SLiC/RSO "hinge"): log pi(y_w) - log pi(y_l) = -2 - (-4) = 2; beta 0.25 -> 1 - 0.5 = 0.5
    close(run("hinge", policy_chosen_logps=t(-2.0), policy_rejected_logps=t(-4.0), beta=0.25, reference_free=True), 0.5)


def test_nca_values():
    # beta 1, h_w = ln 3, h_l = -ln 3:
    #   -log sigma(ln3) - 1/2 log sigma(-ln3) - 1/2 log sigma(ln3) = ln(4/3) + ln(4)/2 + ln(4/3)/2
    close(run("nca", **pair(LN3, -LN3), beta=1.0), 1.5 * math.log(4 / 3) + 0.5 * math.log(4))
    # h_w = 0, h_l = ln 3: ln 2 + ln(2)/2 + ln(4)/2
    close(run("nca", **pair(0.0, LN3), beta=1.0), 1.5 * LN2 + 0.5 * math.log(4))


# ------------------------------------------------------------------------------------------- KTO
def test_kto_values():
    kto = dict(policy_logps=t(LN3 - 4.0, LN3 - 4.0), ref_logps=t(-4.0, -4.0), labels=torch.tensor([True, False]))
    # beta 1, z0 = 0, r = ln 3: desirable 1 - sigma(ln 3) = 1/4; undesirable 1 - sigma(-ln 3) = 3/4.
    close(run("kto", **kto, kl_baseline=torch.tensor(0.0, dtype=torch.float64), beta=1.0), 0.25, 0.75)
    # lambda_D = 2, lambda_U = 0.5 scale each side: 0.5 and 0.375.
    out = run("kto", **kto, kl_baseline=t(0.0)[0], beta=1.0, desirable_weight=2.0, undesirable_weight=0.5)
    close(out, 0.5, 0.375)
    # z0 = ln 3 and r = 2 ln 3: desirable 1 - sigma(ln 3) = 1/4; undesirable 1 - sigma(-ln 3) = 3/4.
    kto2 = kto | {"policy_logps": t(2 * LN3 - 4.0, 2 * LN3 - 4.0)}
    close(run("kto", **kto2, kl_baseline=torch.tensor(LN3, dtype=torch.float64), beta=1.0), 0.25, 0.75)
    # a negative KL estimate is clamped to 0, so this equals the first case.
    close(run("kto", **kto, kl_baseline=torch.tensor(-1.0, dtype=torch.float64), beta=1.0), 0.25, 0.75)
    torch.testing.assert_close(out.metrics["chosen_rewards"], t(LN3))


def test_kto_kl_baseline_helper():
    from ratchet.losses import kto_kl_baseline

    # mean(1, 3) = 2; a negative mean clamps to 0.
    assert kto_kl_baseline(t(0.0, 1.0), t(-1.0, -2.0)).item() == 2.0
    assert kto_kl_baseline(t(-3.0), t(0.0)).item() == 0.0


# -------------------------------------------------------------------------------- reference-free
def test_simpo_values():
    # beta 2, gamma/beta 0.5: avg_w = -2/2 = -1, avg_l = -6/3 = -2; 2 (1 - 0.5) = 1; -log sigma(1) = log(1 + e^-1)
    x = dict(policy_chosen_logps=t(-2.0), policy_rejected_logps=t(-6.0))
    lengths = dict(chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([3]))
    close(run("simpo", **x, **lengths), math.log1p(math.exp(-1)))
    # equal averages: -log sigma(-gamma) = log(1 + e^gamma), gamma = 0.5 * 2 = 1
    x = dict(policy_chosen_logps=t(-4.0), policy_rejected_logps=t(-6.0))
    close(run("simpo", **x, **lengths), math.log1p(math.e))


def test_orpo_values():
    # avg_w = -2 ln2 / 2 = -ln 2 -> p = 1/2, odds 1, log odds 0; avg_l = -3 ln4 / 3 = -ln 4 -> p = 1/4, odds 1/3.
    # log odds ratio = ln 3; loss = -avg_w - 0.1 log sigma(ln 3) = ln 2 - 0.1 ln(3/4)
    x = dict(policy_chosen_logps=t(-2 * LN2), policy_rejected_logps=t(-3 * math.log(4)))
    lengths = dict(chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([3]))
    out = run("orpo", **x, **lengths)
    close(out, LN2 - 0.1 * math.log(0.75))
    torch.testing.assert_close(out.metrics["log_odds_ratio"], t(LN3))
    # equal averages (-ln 2): ln 2 - 0.1 log sigma(0) = 1.1 ln 2
    x = dict(policy_chosen_logps=t(-2 * LN2), policy_rejected_logps=t(-3 * LN2))
    close(run("orpo", **x, **lengths), 1.1 * LN2)


# -------------------------------------------------------------------------------------- RPO, SELM
def test_rpo_values():
    # beta 1, eta 0.5, Delta = ln 3, log pi(y_w) = -2: ln(4/3) + 0.5 * 1 * 2 = 1.2876821
    x = pair(LN3, 0.0, ref_w=-2.0 - LN3)
    close(run("rpo", **x, beta=1.0, eta=0.5), math.log(4 / 3) + 1.0)
    # token_mean with |y_w| = 4: ln(4/3) + 0.5 * 2 / 4 = ln(4/3) + 0.25
    out = run("rpo", **x, chosen_lengths=torch.tensor([4]), beta=1.0, eta=0.5, nll="token_mean")
    close(out, math.log(4 / 3) + 0.25)


def test_selm_values():
    # beta 1, alpha 0.1, Delta = ln 3, h(y_ref) = -2: ln(4/3) + 0.1 * 1 * (-2) = 0.0876821
    x = pair(LN3, 0.0) | {"policy_ref_response_logps": t(-9.0), "ref_ref_response_logps": t(-7.0)}
    close(run("selm", **x, beta=1.0, alpha=0.1), math.log(4 / 3) - 0.2)
    # alpha 0 is DPO: ln(4/3)
    close(run("selm", **x, beta=1.0, alpha=0.0), math.log(4 / 3))


# ------------------------------------------------------------------------------------------- SRPO
def srpo_inputs(r_w, r_l, w_from_l, l_from_l, w_from_w, l_from_w):
    """SRPO tensors with the given log-ratios (policy minus reference) for all six sequences."""
    ratios = {
        "chosen": r_w, "rejected": r_l, "revise_chosen_from_rejected": w_from_l,
        "revise_rejected_from_rejected": l_from_l, "revise_chosen_from_chosen": w_from_w,
        "revise_rejected_from_chosen": l_from_w,
    }  # fmt: skip
    x = {}
    for i, (k, r) in enumerate(ratios.items()):
        x[f"ref_{k}_logps"] = t(-3.0 - i)
        x[f"policy_{k}_logps"] = t(-3.0 - i + r)
    return x


def test_srpo_values():
    # beta 1, alpha 1/2. At the optimum of both terms (revision ratios 1/2, robust combination 1): 0.
    #   L_SI = (0.5 - 0 - 0.5)^2 + (0.5 - 0 - 0.5)^2 = 0;  L_rob = (0.5 + 0.5 - 0 - 0 - 1)^2 = 0
    close(run("srpo", **srpo_inputs(0.5, 0.0, 0.5, 0.0, 0.5, 0.0), beta=1.0, alpha=0.5), 0.0)
    # r_w = 3, r_l = 0, r+(w|l) = 1, others 0:
    #   L_SI = (1 - 0.5)^2 + (0 - 0.5)^2 = 0.5;  L_rob = (1 + 3 - 0 - 0 - 1)^2 = 9;  0.5*0.5 + 0.5*9 = 4.75
    out = run("srpo", **srpo_inputs(3.0, 0.0, 1.0, 0.0, 0.0, 0.0), beta=1.0, alpha=0.5)
    close(out, 4.75)
    torch.testing.assert_close(out.metrics["si_loss"], t(0.5))
    torch.testing.assert_close(out.metrics["robust_loss"], t(9.0))
    # beta 0.5, alpha 0.8, r+(l|w) = 2, others 0: L_SI = 1/4 + (0.5*(0 - 2) - 0.5)^2 = 0.25 + 2.25 = 2.5;
    #   L_rob = (0.5 * (0 + 0 - 2 - 0) - 1)^2 = 4;  0.8 * 2.5 + 0.2 * 4 = 2.8
    close(run("srpo", **srpo_inputs(0.0, 0.0, 0.0, 0.0, 0.0, 2.0), beta=0.5, alpha=0.8), 2.8)


# -------------------------------------------------------------------------------------- INPO, SPPO
def test_inpo_values():
    # eta 0.5 (target 1), tau/eta 0.5, policy (0, 0), pi_t (-1, 0), anchor (-3, 0):
    #   h_t = log pi(w)/pi(l) - 0.5 log a(w)/a(l) - 0.5 log pi_t(w)/pi_t(l) = 0 + 1.5 + 0.5 = 2; (2 - 1)^2 = 1
    x = dict(
        policy_chosen_logps=t(0.0), policy_rejected_logps=t(0.0), ref_chosen_logps=t(-1.0),
        ref_rejected_logps=t(0.0), anchor_chosen_logps=t(-3.0), anchor_rejected_logps=t(0.0),
    )  # fmt: skip
    close(run("inpo", **x, eta=0.5, tau_over_eta=0.5), 1.0)
    # tau/eta = 1 uses only the anchor: h_t = 0 + 3 = 3, (3 - 1)^2 = 4;  tau/eta = 0 only pi_t: (1 - 1)^2 = 0
    close(run("inpo", **x, eta=0.5, tau_over_eta=1.0), 4.0)
    close(run("inpo", **x, eta=0.5, tau_over_eta=0.0), 0.0)


def test_sppo_values():
    # beta 0.5 (eta 2), P_w = 3/4, P_l = 1/4 -> targets +-0.5; h_w = 1, h_l = 0:
    #   1/2 [(1 - 0.5)^2 + (0 + 0.5)^2] = 0.25
    x = pair(1.0, 0.0) | {"chosen_win_rates": t(0.75), "rejected_win_rates": t(0.25)}
    close(run("sppo", **x, beta=0.5), 0.25)
    # at the targets the loss is 0: h_w = 0.5, h_l = -0.5
    x = pair(0.5, -0.5) | {"chosen_win_rates": t(0.75), "rejected_win_rates": t(0.25)}
    close(run("sppo", **x, beta=0.5), 0.0)


# -------------------------------------------------------------------------------------------- f-DPO
def test_fdpo_values():
    # beta 1. forward KL, f'(u) = -1/u: h_w = 0 -> -1, h_l = ln 2 -> -1/2; diff -1/2; -log sigma(-1/2) = log(1 + e^0.5)
    close(run("fdpo", **pair(0.0, LN2), beta=1.0, divergence="forward_kl"), math.log1p(math.exp(0.5)))
    # JS, f'(u) = log(2u/(1+u)): u_w = 3 -> ln 1.5, u_l = 1 -> 0; -log sigma(ln 1.5) = log(1 + 2/3) = ln(5/3)
    close(run("fdpo", **pair(LN3, 0.0), beta=1.0, divergence="js"), math.log(5 / 3))
    # alpha 1/2, f'(u) = (1 - u^-1/2) / (1/2): u_w = 4 -> 1, u_l = 1 -> 0; -log sigma(1) = log(1 + e^-1)
    close(run("fdpo", **pair(math.log(4), 0.0), beta=1.0, divergence="alpha", alpha=0.5), math.log1p(math.exp(-1)))


# ------------------------------------------------------------------------------------------- SFT
def test_sft_values():
    # -log pi = 3 (sum); token mean over 4 tokens = 0.75
    close(run("sft", policy_logps=t(-3.0)), 3.0)
    close(run("sft", policy_logps=t(-3.0), lengths=torch.tensor([4]), token_mean=True), 0.75)
    with pytest.raises(ValueError, match="needs lengths"):
        run("sft", policy_logps=t(-3.0), token_mean=True)


def test_kto_balanced_weights():
    from ratchet.losses.kto import balanced_weights

    # 14 desirable, 50 undesirable: lambda_D = 50/14 so lambda_D * 14 / (1 * 50) = 1 (the paper's lower bound)
    assert balanced_weights(14, 50) == pytest.approx({"desirable_weight": 50 / 14, "undesirable_weight": 1.0})
    # the other way round: lambda_U = 50/14, so 1 * 50 / (lambda_U * 14) = 1
    assert balanced_weights(50, 14) == pytest.approx({"desirable_weight": 1.0, "undesirable_weight": 50 / 14})
    assert balanced_weights(7, 7) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert balanced_weights(0, 9) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # nothing to balance
