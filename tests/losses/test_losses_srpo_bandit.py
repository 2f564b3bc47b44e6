"""SRPO on a tabular bandit: minimising the population loss recovers the closed forms.

One prompt, K responses, an exact (non-Bradley-Terry) preference matrix P with P + P^T = 1. Pairs
(a, b) are drawn from a behaviour distribution mu x mu and labelled a > b with probability P(a > b), so
the population loss is sum_{a != b} mu(a) mu(b) P(a > b) L_alpha(y_w = a, y_l = b). The closed forms
(docs/algorithms.md#srpo-objective) are

    pi+*(y'|y) = pi_ref(y'|y) exp(P(y' > y)/beta) / Z(y),   Z(y) = sum_y' pi_ref(y'|y) exp(P(y' > y)/beta)
    pi*(y)     = pi_ref(y) / Z(y)  (normalised)

and neither depends on mu.
"""

from __future__ import annotations

import pytest
import torch

from ratchet.losses import srpo_loss

K, BETA = 4, 0.5
F64 = torch.float64


def bandit(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(K, generator=g, dtype=F64)
    ref_rev_logits = torch.randn(K, K, generator=g, dtype=F64)  # [draft, revision]
    a = torch.randn(K, K, generator=g, dtype=F64)
    pref = 0.5 + 0.45 * torch.tanh(a - a.T)  # P[i, j] = P(i > j); antisymmetric around 1/2, diagonal 1/2
    return ref_logits, ref_rev_logits, pref


def closed_form(ref_logits, ref_rev_logits, pref):
    ref_rev = ref_rev_logits.softmax(-1)
    tilt = ref_rev * torch.exp(pref.T / BETA)  # tilt[d, y'] = pi_ref(y'|d) exp(P(y' > d)/beta)
    z = tilt.sum(-1)
    reviser = tilt / z[:, None]
    generator = ref_logits.softmax(-1) / z
    return generator / generator.sum(), reviser


def population_loss(theta, phi, ref_logits, ref_rev_logits, pref, mu, alpha):
    a, b = torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
    off = a != b
    a, b = a[off], b[off]  # ordered pairs a != b; y_w = a, y_l = b
    lp, ref = theta.log_softmax(-1), ref_logits.log_softmax(-1)
    lpr, refr = phi.log_softmax(-1), ref_rev_logits.log_softmax(-1)
    out = srpo_loss(
        policy_chosen_logps=lp[a], policy_rejected_logps=lp[b], ref_chosen_logps=ref[a], ref_rejected_logps=ref[b],
        policy_revise_chosen_from_rejected_logps=lpr[b, a], policy_revise_rejected_from_rejected_logps=lpr[b, b],
        policy_revise_chosen_from_chosen_logps=lpr[a, a], policy_revise_rejected_from_chosen_logps=lpr[a, b],
        ref_revise_chosen_from_rejected_logps=refr[b, a], ref_revise_rejected_from_rejected_logps=refr[b, b],
        ref_revise_chosen_from_chosen_logps=refr[a, a], ref_revise_rejected_from_chosen_logps=refr[a, b],
        beta=BETA, alpha=alpha,
    )  # fmt: skip
    return (mu[a] * mu[b] * pref[a, b] * out.loss).sum()


def minimise(ref_logits, ref_rev_logits, pref, mu, alpha):
    theta = ref_logits.clone().requires_grad_()
    phi = ref_rev_logits.clone().requires_grad_()
    opt = torch.optim.LBFGS(
        [theta, phi], lr=1.0, max_iter=1000, tolerance_grad=1e-13, tolerance_change=1e-16,
        history_size=50, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = population_loss(theta, phi, ref_logits, ref_rev_logits, pref, mu, alpha)
        loss.backward()
        return loss

    opt.step(closure)  # one call runs L-BFGS to convergence (about 50 evaluations here)
    return theta.detach().softmax(-1), phi.detach().softmax(-1)


MUS = {
    "uniform": torch.full((K,), 1 / K, dtype=F64),
    "skewed": torch.tensor([0.55, 0.25, 0.15, 0.05], dtype=F64),
}


@pytest.mark.parametrize("mu, alpha", [("uniform", 0.8), ("skewed", 0.8), ("skewed", 0.5)])
def test_population_minimiser_is_the_closed_form(mu, alpha):
    ref_logits, ref_rev_logits, pref = bandit()
    generator, reviser = minimise(ref_logits, ref_rev_logits, pref, MUS[mu], alpha)
    want_generator, want_reviser = closed_form(ref_logits, ref_rev_logits, pref)
    torch.testing.assert_close(reviser, want_reviser, rtol=0, atol=1e-6)
    torch.testing.assert_close(generator, want_generator, rtol=0, atol=1e-6)


def test_closed_form_is_not_the_reference_and_not_mu_dependent():
    # Guards the test above against a trivial pass: the optimum moves away from pi_ref, and the behaviour
    # distribution mu appears nowhere in the closed form (same answer for both mus, checked above).
    ref_logits, ref_rev_logits, pref = bandit()
    generator, reviser = closed_form(ref_logits, ref_rev_logits, pref)
    assert (generator - ref_logits.softmax(-1)).abs().max() > 0.05
    assert (reviser - ref_rev_logits.softmax(-1)).abs().max() > 0.05
    # The reviser moves mass toward responses that beat the draft: pi+*(y'|y)/pi_ref(y'|y) rises with P(y' > y).
    ratio = reviser / ref_rev_logits.softmax(-1)
    for d in range(K):
        order = torch.argsort(pref[:, d])
        assert torch.all(ratio[d, order].diff() > 0)
