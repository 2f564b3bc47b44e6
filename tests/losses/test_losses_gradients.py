"""Gradient direction: one SGD step on a tiny tabular policy moves probability the right way.

The policy is a table of logits, one softmax row per prompt (and, for SRPO, one row per
(prompt, draft) for the reviser). Response 0 is chosen, 1 rejected, 2 the reference's own response
(SELM). The reference starts near the policy but not equal to it, so no loss sits at a special point.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ratchet.losses import LOSSES

B, K = 4, 5
CHOSEN, REJECTED, OTHER = 0, 1, 2
F64 = torch.float64


class Tabular:
    """Logit tables for policy and reference: generator [B, K], reviser [B, draft K, K]."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ref = 0.5 * torch.randn(B, K, generator=g, dtype=F64)
        self.ref_rev = 0.5 * torch.randn(B, K, K, generator=g, dtype=F64)
        self.anchor = 0.5 * torch.randn(B, K, generator=g, dtype=F64)
        self.theta = (self.ref + 0.1 * torch.randn(B, K, generator=g, dtype=F64)).requires_grad_()
        self.theta_rev = (self.ref_rev + 0.1 * torch.randn(B, K, K, generator=g, dtype=F64)).requires_grad_()

    def inputs(self) -> dict[str, torch.Tensor]:
        lp, ref = self.theta.log_softmax(-1), self.ref.log_softmax(-1)
        lp_rev, ref_rev = self.theta_rev.log_softmax(-1), self.ref_rev.log_softmax(-1)
        x = {
            "chosen_lengths": torch.tensor([3, 5, 2, 4]), "rejected_lengths": torch.tensor([4, 2, 6, 1]),
            "chosen_win_rates": torch.full((B,), 0.8, dtype=F64),
            "rejected_win_rates": torch.full((B,), 0.3, dtype=F64),
            "anchor_chosen_logps": self.anchor.log_softmax(-1)[:, CHOSEN],
            "anchor_rejected_logps": self.anchor.log_softmax(-1)[:, REJECTED],
            "policy_ref_response_logps": lp[:, OTHER], "ref_ref_response_logps": ref[:, OTHER],
        }  # fmt: skip
        for side, y in (("chosen", CHOSEN), ("rejected", REJECTED)):
            x[f"policy_{side}_logps"], x[f"ref_{side}_logps"] = lp[:, y], ref[:, y]
            for draft_side, d in (("chosen", CHOSEN), ("rejected", REJECTED)):
                key = f"revise_{side}_from_{draft_side}_logps"
                x["policy_" + key], x["ref_" + key] = lp_rev[:, d, y], ref_rev[:, d, y]
        return x

    def margin(self) -> torch.Tensor:
        lp = self.theta.detach().log_softmax(-1)
        return lp[:, CHOSEN] - lp[:, REJECTED]

    def revision_margins(self) -> torch.Tensor:
        lp = self.theta_rev.detach().log_softmax(-1)
        # revising the loser should reach y_w; revising the winner should keep y_w
        from_loser = lp[:, REJECTED, CHOSEN] - lp[:, REJECTED, REJECTED]
        from_winner = lp[:, CHOSEN, CHOSEN] - lp[:, CHOSEN, REJECTED]
        return torch.stack([from_loser, from_winner])


def sgd_step(policy: Tabular, name: str, lr: float = 0.1, **overrides) -> None:
    spec = LOSSES[name]
    x = policy.inputs()
    out = spec.fn(**{k: x[k] for k in spec.inputs}, **dataclasses.asdict(spec.make_params(**overrides)))
    opt = torch.optim.SGD([policy.theta, policy.theta_rev], lr=lr)
    opt.zero_grad()
    out.loss.mean().backward()
    opt.step()


PAIRED_CASES = [
    ("dpo", {}), ("dpop", {}), ("cdpo", {}), ("rdpo", {}), ("ipo", {}), ("ipo", {"length_normalized": True}),
    ("hinge", {}), ("hinge", {"reference_free": True}), ("nca", {}), ("simpo", {}), ("orpo", {}),
    ("rpo", {}), ("rpo", {"nll": "token_mean"}), ("selm", {}), ("srpo", {}), ("srpo", {"alpha": 0.0}),
    ("inpo", {}), ("sppo", {}), ("fdpo", {}), ("fdpo", {"divergence": "forward_kl"}),
    ("fdpo", {"divergence": "js"}), ("fdpo", {"divergence": "alpha"}),
]  # fmt: skip


@pytest.mark.parametrize("name, overrides", PAIRED_CASES, ids=[f"{n}-{o}" for n, o in PAIRED_CASES])
def test_sgd_step_raises_chosen_margin(name, overrides):
    policy = Tabular()
    before = policy.margin()
    sgd_step(policy, name, **overrides)
    assert torch.all(policy.margin() > before), (name, policy.margin() - before)


REVISION_ONLY = {"pit"}  # trains the reviser only: test_pit_step_raises_revision_margins


def test_every_pairwise_loss_is_covered():
    covered = {n for n, _ in PAIRED_CASES} | REVISION_ONLY
    assert covered == {n for n, s in LOSSES.items() if s.data in ("paired", "revision", "scored")}


@pytest.mark.parametrize("alpha", [1.0, 0.8])
def test_srpo_step_raises_revision_margins(alpha):
    policy = Tabular(seed=1)
    before = policy.revision_margins()
    sgd_step(policy, "srpo", alpha=alpha)
    assert torch.all(policy.revision_margins() > before)


def test_srpo_alpha_one_leaves_generator_unchanged():
    policy = Tabular(seed=2)
    theta = policy.theta.detach().clone()
    sgd_step(policy, "srpo", alpha=1.0)
    assert torch.equal(policy.theta.detach(), theta)


def test_kto_step_raises_desirable_and_lowers_undesirable():
    policy = Tabular(seed=3)
    labels = torch.tensor([True, False, True, False])
    ys = torch.tensor([CHOSEN, REJECTED, OTHER, CHOSEN])
    rows = torch.arange(B)
    before = policy.theta.detach().log_softmax(-1)[rows, ys]
    lp, ref = policy.theta.log_softmax(-1), policy.ref.log_softmax(-1)
    kl = torch.tensor(0.05, dtype=F64)
    out = LOSSES["kto"].fn(
        policy_logps=lp[rows, ys], ref_logps=ref[rows, ys], labels=labels, kl_baseline=kl,
        **dataclasses.asdict(LOSSES["kto"].make_params()),
    )  # fmt: skip
    out.loss.mean().backward()
    torch.optim.SGD([policy.theta], lr=0.1).step()
    after = policy.theta.detach().log_softmax(-1)[rows, ys]
    assert torch.all((after > before) == labels)


@pytest.mark.parametrize("token_mean", [False, True])
def test_sft_step_raises_the_selected_completion(token_mean):
    policy = Tabular(seed=4)
    before = policy.theta.detach().log_softmax(-1)[:, CHOSEN]
    lp = policy.theta.log_softmax(-1)[:, CHOSEN]
    LOSSES["sft"].fn(policy_logps=lp, lengths=torch.tensor([3, 5, 2, 4]), token_mean=token_mean).loss.mean().backward()
    torch.optim.SGD([policy.theta], lr=0.1).step()
    assert torch.all(policy.theta.detach().log_softmax(-1)[:, CHOSEN] > before)


def test_pit_step_raises_revision_margins():
    # PIT's gap orderings only read revision prompts: revising y_l moves to y_w, revising y_w keeps
    # it; the generator table gets no gradient
    policy = Tabular(seed=1)
    before, generator = policy.revision_margins(), policy.margin()
    sgd_step(policy, "pit", beta=1.0)
    assert torch.all(policy.revision_margins() > before)
    torch.testing.assert_close(policy.margin(), generator)
