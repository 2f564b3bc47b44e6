"""Limiting cases that tie the losses together (random float64 inputs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ratchet.losses import LOSSES

from ._helpers import random_inputs


def call(name, x, **overrides):
    spec = LOSSES[name]
    names = set(spec.inputs)
    return spec.fn(**{k: v for k, v in x.items() if k in names}, **dataclasses.asdict(spec.make_params(**overrides)))


@pytest.fixture
def pairs():
    return random_inputs(LOSSES["dpo"], batch=7, seed=3)


@pytest.mark.parametrize("name", ["cdpo", "rdpo"])
def test_epsilon_zero_is_dpo(name, pairs):
    dpo = call("dpo", pairs, beta=0.3)
    torch.testing.assert_close(call(name, pairs, beta=0.3, epsilon=0.0).loss, dpo.loss, rtol=0, atol=1e-14)


def test_rdpo_is_unbiased_over_label_flips(pairs):
    # E_flip[rDPO] with flip probability eps equals the clean DPO loss (the unbiasedness that defines rDPO,
    # Chowdhury et al. 2024):
    # (1 - eps) L_eps(Delta) + eps L_eps(-Delta) = -log sigma(beta Delta).
    eps = 0.2
    flipped = pairs | {
        "policy_chosen_logps": pairs["policy_rejected_logps"], "policy_rejected_logps": pairs["policy_chosen_logps"],
        "ref_chosen_logps": pairs["ref_rejected_logps"], "ref_rejected_logps": pairs["ref_chosen_logps"],
    }  # fmt: skip
    mix = (1 - eps) * call("rdpo", pairs, epsilon=eps).loss + eps * call("rdpo", flipped, epsilon=eps).loss
    torch.testing.assert_close(mix, call("dpo", pairs).loss, rtol=1e-12, atol=1e-12)


def test_fdpo_reverse_kl_is_dpo(pairs):
    torch.testing.assert_close(call("fdpo", pairs, beta=0.2).loss, call("dpo", pairs, beta=0.2).loss, rtol=0, atol=0)


def test_fdpo_alpha_limits_are_reverse_and_forward_kl(pairs):
    # f'(u) = (1 - u^-alpha)/alpha -> log u as alpha -> 0; alpha = 1 is 1 - 1/u (forward KL up to a constant).
    small = call("fdpo", pairs, divergence="alpha", alpha=1e-7).loss
    torch.testing.assert_close(small, call("dpo", pairs).loss, rtol=1e-5, atol=1e-6)
    one = call("fdpo", pairs, divergence="alpha", alpha=1.0).loss
    torch.testing.assert_close(one, call("fdpo", pairs, divergence="forward_kl").loss, rtol=1e-12, atol=1e-12)


def test_selm_alpha_zero_and_rpo_eta_zero_are_dpo():
    x = random_inputs(LOSSES["selm"], batch=6, seed=5)
    torch.testing.assert_close(call("selm", x, alpha=0.0).loss, call("dpo", x, beta=0.01).loss, rtol=0, atol=0)
    torch.testing.assert_close(call("rpo", x, eta=0.0).loss, call("dpo", x, beta=0.01).loss, rtol=0, atol=0)


def test_inpo_reduces_to_ipo():
    x = random_inputs(LOSSES["inpo"], batch=6, seed=6)
    ipo = call("ipo", x, tau=0.05).loss
    # tau = 0: IPO against pi_t; any tau when the anchor equals pi_t.
    torch.testing.assert_close(call("inpo", x, eta=0.05, tau_over_eta=0.0).loss, ipo, rtol=1e-12, atol=1e-12)
    same = x | {"anchor_chosen_logps": x["ref_chosen_logps"], "anchor_rejected_logps": x["ref_rejected_logps"]}
    torch.testing.assert_close(call("inpo", same, eta=0.05).loss, ipo, rtol=1e-12, atol=1e-12)


def test_sppo_hard_labels_is_half_trl_sppo_hard(pairs):
    # P_w = 1, P_l = 0: 1/2 [(h_w - 1/(2 beta))^2 + (h_l + 1/(2 beta))^2]
    x = pairs | {"chosen_win_rates": torch.ones(7, dtype=torch.float64), "rejected_win_rates": torch.zeros(7)}
    h_w = pairs["policy_chosen_logps"] - pairs["ref_chosen_logps"]
    h_l = pairs["policy_rejected_logps"] - pairs["ref_rejected_logps"]
    expected = 0.5 * ((h_w - 0.5 / 0.1) ** 2 + (h_l + 0.5 / 0.1) ** 2)
    torch.testing.assert_close(call("sppo", x, beta=0.1).loss, expected, rtol=1e-12, atol=1e-12)


def test_hinge_reference_free_equals_hinge_with_zero_reference(pairs):
    zero = pairs | {"ref_chosen_logps": torch.zeros(7, dtype=torch.float64), "ref_rejected_logps": torch.zeros(7)}
    free = {k: pairs[k] for k in ("policy_chosen_logps", "policy_rejected_logps")}
    expected = call("hinge", zero, beta=0.1).loss
    torch.testing.assert_close(call("hinge", free, beta=0.1, reference_free=True).loss, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs ref_chosen_logps"):
        call("hinge", free)


def test_srpo_alpha_one_ignores_generative_terms():
    x = random_inputs(LOSSES["srpo"], batch=5, seed=7, requires_grad=True)
    base = call("srpo", x, alpha=1.0).loss
    moved = x | {
        "policy_chosen_logps": x["policy_chosen_logps"] + 3.0,
        "policy_rejected_logps": x["policy_rejected_logps"] - 2.0,
        "ref_chosen_logps": x["ref_chosen_logps"] - 1.0,
        "ref_rejected_logps": x["ref_rejected_logps"] + 5.0,
    }
    torch.testing.assert_close(call("srpo", moved, alpha=1.0).loss, base, rtol=0, atol=0)
    base.sum().backward()
    assert x["policy_chosen_logps"].grad is None or torch.all(x["policy_chosen_logps"].grad == 0)
    assert x["policy_rejected_logps"].grad is None or torch.all(x["policy_rejected_logps"].grad == 0)
    assert x["policy_revise_chosen_from_rejected_logps"].grad.abs().sum() > 0


def test_srpo_is_the_alpha_mix_of_its_two_terms():
    x = random_inputs(LOSSES["srpo"], batch=5, seed=8)
    si, rob = call("srpo", x, alpha=1.0).loss, call("srpo", x, alpha=0.0).loss
    torch.testing.assert_close(call("srpo", x, alpha=0.3).loss, 0.3 * si + 0.7 * rob, rtol=1e-12, atol=1e-12)


def test_sft_sum_and_rpo_token_mean_consistency():
    x = random_inputs(LOSSES["rpo"], batch=4, seed=9)
    sft = call("sft", {"policy_logps": x["policy_chosen_logps"], "lengths": x["chosen_lengths"]}, token_mean=True)
    rpo = call("rpo", x, nll="token_mean", eta=0.5).loss
    torch.testing.assert_close(rpo, call("dpo", x, beta=0.01).loss + 0.5 * sft.loss, rtol=1e-12, atol=1e-12)
