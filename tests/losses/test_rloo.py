"""RLOO (Ahmadian et al. 2024): leave-one-out advantages by hand, the loss and its gradient by hand,
and two tabular bandits: the rewarded answer gains probability, and with the self-likelihood reward
and a KL to the base the policy converges to the sharpened optimum pi* ~ pi_base^(1 + 1/beta)."""

from __future__ import annotations

import pytest
import torch

from ratchet.losses import LOSSES, rloo_advantages, rloo_loss

T = torch.float64


def test_advantages_by_hand():
    # row 1 (k=4): baseline of sample 0 is mean(0, 0, 1) = 1/3 -> 1 - 1/3 = 2/3; of sample 1 mean(1, 0, 1) = 2/3
    # row 2 (k=3): sample 1's baseline is mean(0.5, -1) = -0.25 -> 2.25; sample 2's mean(0.5, 2) = 1.25 -> -2.25
    a = rloo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=T))
    torch.testing.assert_close(a, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]], dtype=T))
    b = rloo_advantages(torch.tensor([[0.5, 2.0, -1.0]], dtype=T))
    torch.testing.assert_close(b, torch.tensor([[0.0, 2.25, -2.25]], dtype=T))


def test_advantages_need_two_samples():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor([[1.0]], dtype=T))


def test_loss_and_gradient_by_hand():
    # kl = policy - ref = [0.5, 0, -1, 0]; beta 0.1 -> r~ = [0.95, 0, 0.1, 1.0]
    # A = r~_i - mean of the other three = [0.58333, -0.68333, -0.55, 0.65]
    # L = -(1/4) sum A_i logp_i = -(1/4)(-0.58333 + 1.36667 + 1.65 - 2.6) = 0.0416667; dL/dlogp_i = -A_i / 4
    policy = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], dtype=T, requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, -2.0, -4.0]], dtype=T)
    out = rloo_loss(policy_logps=policy, ref_logps=ref, rewards=torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=T),
                    beta=0.1)
    torch.testing.assert_close(out.loss, torch.tensor([0.25 / 6], dtype=T))
    out.loss.sum().backward()
    advantages = torch.tensor([[7 / 12, -41 / 60, -0.55, 0.65]], dtype=T)
    torch.testing.assert_close(policy.grad, -advantages / 4)
    torch.testing.assert_close(out.metrics["kl"], torch.tensor([-0.125], dtype=T))
    assert out.loss.shape == (1,) and not any(m.requires_grad for m in out.metrics.values())


def test_equal_rewards_give_no_gradient_without_kl():
    policy = torch.randn(3, 4, dtype=T, requires_grad=True)
    out = rloo_loss(policy_logps=policy, ref_logps=torch.zeros(3, 4, dtype=T), rewards=torch.full((3, 4), 0.7,
                    dtype=T), beta=0.0)
    out.loss.sum().backward()
    torch.testing.assert_close(policy.grad, torch.zeros_like(policy.grad), atol=1e-15, rtol=0)


def test_registry_entry():
    spec = LOSSES["rloo"]
    assert spec.data == "online" and spec.needs_reference
    assert spec.inputs == ("policy_logps", "ref_logps", "rewards")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        spec.make_params(beta=-1.0)


def _bandit(reward_of, base_logits, *, beta: float, steps: int, lr: float, seed: int = 0, n: int = 64, k: int = 4):
    """A tabular softmax policy over answers, trained with RLOO on n prompts x k samples per step."""
    g = torch.Generator().manual_seed(seed)
    logits = base_logits.clone().requires_grad_(True)
    ref = torch.log_softmax(base_logits, -1)
    opt = torch.optim.SGD([logits], lr=lr)
    for _ in range(steps):
        logp_all = torch.log_softmax(logits, -1)
        y = torch.multinomial(logp_all.detach().exp(), n * k, replacement=True, generator=g).view(n, k)
        out = rloo_loss(policy_logps=logp_all[y], ref_logps=ref[y], rewards=reward_of(y), beta=beta)
        opt.zero_grad()
        out.loss.mean().backward()
        opt.step()
    return torch.softmax(logits.detach(), -1)


def test_bandit_raises_the_rewarded_answer():
    base = torch.zeros(5, dtype=T)  # uniform: p(answer 3) = 0.2
    probs = _bandit(lambda y: (y == 3).to(T), base, beta=0.0, steps=60, lr=2.0)
    assert probs[3] > 0.9, probs


def test_bandit_with_self_likelihood_reward_sharpens_to_the_closed_form():
    # Sharpening (Huang et al. 2024): reward log pi_base(y), KL beta to pi_base -> pi* ~ pi_base^(1 + 1/beta)
    p_base = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=T)
    base = p_base.log()
    beta = 0.5
    target = p_base ** (1 + 1 / beta) / (p_base ** (1 + 1 / beta)).sum()  # [0.64, 0.27, 0.08, 0.01]
    probs = _bandit(lambda y: base[y], base, beta=beta, steps=400, lr=0.5, n=256)
    torch.testing.assert_close(probs, target, atol=0.03, rtol=0)
