"""Parity with TRL's own loss code (TRL is a test-only dependency).

TRL v1 computes DPO and KTO losses only inside `DPOTrainer._compute_loss` / `KTOTrainer._compute_loss`,
which run a model forward pass. We call those methods unbound on a minimal stand-in object, with a
`TableLM` stand-in "model" whose per-token log-prob of token id v is `table[v]`: each sequence gets one
completion token carrying its whole summed log-prob and `n - 1` padding-free tokens of log-prob 0, so
TRL sees exactly the summed log-probs and completion lengths we feed to our losses. Reference log-probs
go in through TRL's precomputed-reference path. Each example is its own batch (B = 1), so TRL's batch
mean is the per-example loss. The reference-free losses call `CPOTrainer.cpo_loss` and
`ORPOTrainer.odds_ratio_loss` directly. Tolerance 1e-6 in float64 unless a test says why not.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ratchet.losses import LOSSES, kto_kl_baseline

trl = pytest.importorskip("trl")
with warnings.catch_warnings():  # TRL warns that its experimental trainers (CPO, ORPO) may change
    warnings.simplefilter("ignore")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

F64 = torch.float64
N = 6  # examples per test


class TableLM:
    """Stand-in for TRL's fused-LM-head model output: log_probs[b, t] = table[labels[b, t + 1]] (0 where masked)."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def __call__(self, input_ids, labels, **kwargs):
        targets = labels[:, 1:]
        zero = torch.zeros((), dtype=self.table.dtype)
        log_probs = torch.where(targets != -100, self.table[targets.clamp(min=0)], zero)
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def encode(logps: torch.Tensor, lengths: list[int], first_id: int = 1):
    """Token ids / masks for sequences [prompt token, completion tokens...] carrying the given summed log-probs."""
    width = 1 + max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    completion = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 1] = first_id + i  # this token's table entry is the whole log-prob; the rest are id 0 (log-prob 0)
        completion[i, 1 : 1 + n] = 1
    attention = completion.clone()
    attention[:, 0] = 1
    return ids, attention, completion, logps


def make_stub(cls, **attrs):
    accel = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    stub = SimpleNamespace(
        model=SimpleNamespace(training=False), accelerator=accel, aux_loss_enabled=False, precompute_ref_logps=True,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(),
    )  # fmt: skip
    for k, v in attrs.items():
        setattr(stub, k, v)
    return stub


def trl_dpo(
    loss_type, pc, pr, rc, rr, lc, lr_, *, beta, label_smoothing=0.0, f_div="reverse_kl", f_coef=0.5, weights=None
):
    """TRL v1 `DPOTrainer._compute_loss` on one pair (B = 1)."""
    types = loss_type if isinstance(loss_type, list) else [loss_type]
    stub = make_stub(
        DPOTrainer, ld_alpha=None, f_divergence_type=f_div, f_alpha_divergence_coef=f_coef, loss_types=types,
        loss_weights=weights or [1.0] * len(types), beta=beta, label_smoothing=label_smoothing, use_weighting=False,
    )  # fmt: skip
    ids, attention, completion, _ = encode(torch.stack([pc, pr]), [lc, lr_])
    table = torch.cat([torch.zeros(1, dtype=pc.dtype), torch.stack([pc, pr])])
    inputs = {
        "input_ids": ids, "attention_mask": attention, "completion_mask": completion,
        "ref_chosen_logps": rc.reshape(1), "ref_rejected_logps": rr.reshape(1),
    }  # fmt: skip
    loss = DPOTrainer._compute_loss(stub, TableLM(table), inputs, return_outputs=False)
    return loss, stub._metrics["eval"]


def random_pairs(seed, dtype=F64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    base = -5 - 20 * torch.rand(4, N, generator=g, dtype=dtype)
    x = {
        "ref_chosen_logps": base[0], "ref_rejected_logps": base[1],
        "policy_chosen_logps": base[0] + scale * torch.randn(N, generator=g, dtype=dtype),
        "policy_rejected_logps": base[1] + scale * torch.randn(N, generator=g, dtype=dtype),
        "chosen_lengths": torch.randint(1, 9, (N,), generator=g),
        "rejected_lengths": torch.randint(1, 9, (N,), generator=g),
    }  # fmt: skip
    return x


def ours(name, x, **overrides):
    spec = LOSSES[name]
    return spec.fn(**{k: x[k] for k in spec.inputs}, **dataclasses.asdict(spec.make_params(**overrides)))


def theirs(loss_type, x, **kw):
    cols = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    out = []
    for i in range(N):
        pc, pr, rc, rr = (x[c][i] for c in cols)
        loss, _ = trl_dpo(loss_type, pc, pr, rc, rr, int(x["chosen_lengths"][i]), int(x["rejected_lengths"][i]), **kw)
        out.append(loss)
    return torch.stack(out)


def assert_parity(a, b, tol=1e-6):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=0, atol=tol)


# ------------------------------------------------------------------------------ DPOTrainer losses
@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_matches_trl_sigmoid(seed):
    x = random_pairs(seed)
    assert_parity(ours("dpo", x, beta=0.1).loss, theirs("sigmoid", x, beta=0.1))


def test_dpo_metrics_match_trl_logged_rewards():
    x = random_pairs(2)
    out = ours("dpo", x, beta=0.1)
    for i in range(N):
        _, metrics = trl_dpo(
            "sigmoid", x["policy_chosen_logps"][i], x["policy_rejected_logps"][i], x["ref_chosen_logps"][i],
            x["ref_rejected_logps"][i], 3, 4, beta=0.1,
        )  # fmt: skip
        assert abs(metrics["rewards/chosen"][0] - out.metrics["chosen_rewards"][i].item()) < 1e-6
        assert abs(metrics["rewards/rejected"][0] - out.metrics["rejected_rewards"][i].item()) < 1e-6
        assert abs(metrics["rewards/margins"][0] - out.metrics["margins"][i].item()) < 1e-6


def test_ipo_length_normalized_matches_trl_ipo():
    # TRL v1's IPO divides each log-ratio by its completion length; ours does with length_normalized=True.
    x = random_pairs(3, scale=0.5)
    assert_parity(ours("ipo", x, tau=0.1, length_normalized=True).loss, theirs("ipo", x, beta=0.1))


def test_ipo_summed_matches_trl_ipo_at_unit_lengths():
    # The paper's summed form equals TRL's normalised form when every completion has one token.
    x = random_pairs(4, scale=5.0) | {"chosen_lengths": torch.ones(N, dtype=torch.long)}
    x["rejected_lengths"] = torch.ones(N, dtype=torch.long)
    assert_parity(ours("ipo", x, tau=0.1).loss, theirs("ipo", x, beta=0.1))


@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_hinge_matches_trl_hinge(beta):
    x = random_pairs(5)
    assert_parity(ours("hinge", x, beta=beta).loss, theirs("hinge", x, beta=beta))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_rdpo_matches_trl_robust(eps):
    x = random_pairs(6)
    assert_parity(ours("rdpo", x, beta=0.1, epsilon=eps).loss, theirs("robust", x, beta=0.1, label_smoothing=eps))


def test_nca_matches_trl_nca_pair():
    x = random_pairs(7, scale=10.0)
    assert_parity(ours("nca", x, beta=0.1).loss, theirs("nca_pair", x, beta=0.1))


def test_sppo_hard_labels_is_half_of_trl_sppo_hard():
    # Written reason for the factor 2: the SPPO authors' code (uclaml/SPPO sppo/trainer.py) averages the
    # two squared terms, `(loss_w + loss_l)/2`; TRL's `sppo_hard` sums them. Same minimiser and gradient
    # direction; we follow the authors. With P_w = 1, P_l = 0 the objectives agree up to this factor.
    x = random_pairs(8)
    x |= {"chosen_win_rates": torch.ones(N, dtype=F64), "rejected_win_rates": torch.zeros(N, dtype=F64)}
    assert_parity(2 * ours("sppo", x, beta=0.1).loss, theirs("sppo_hard", x, beta=0.1), tol=1e-6)


@pytest.mark.parametrize("divergence, trl_name", [("forward_kl", "forward_kl"), ("js", "js_divergence")])
def test_fdpo_matches_trl_f_divergence(divergence, trl_name):
    x = random_pairs(9, scale=1.0)
    assert_parity(ours("fdpo", x, beta=0.1, divergence=divergence).loss, theirs("sigmoid", x, beta=0.1, f_div=trl_name))


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9])
def test_fdpo_alpha_matches_trl_alpha_divergence_in_float32(alpha):
    # Written reason for float32: TRL's alpha-divergence branch looks up an exponent clamp in a table that
    # has float16/bfloat16/float32 keys only, so float64 inputs raise KeyError there. TRL's coefficient is
    # 1 - alpha in the paper's parametrisation that we use: TRL f'(u) = (u^(c-1) - 1)/(c - 1), ours
    # (1 - u^-alpha)/alpha, identical for c = 1 - alpha. Compared in float32 at 1e-6.
    x = random_pairs(10, dtype=torch.float32, scale=1.0)
    ref = theirs("sigmoid", x, beta=0.1, f_div="alpha_divergence", f_coef=1 - alpha)
    assert_parity(ours("fdpo", x, beta=0.1, divergence="alpha", alpha=alpha).loss, ref, tol=1e-6)


def test_rpo_token_mean_matches_trl_sigmoid_plus_sft():
    # TRL's RPO mapping: loss_type=["sigmoid", "sft"], loss_weights=[1, eta]. Its SFT term is the token
    # mean over the batch's chosen tokens; with B = 1 that is our per-sequence token mean.
    x = random_pairs(11)
    got = ours("rpo", x, beta=0.01, eta=0.005, nll="token_mean").loss
    assert_parity(got, theirs(["sigmoid", "sft"], x, beta=0.01, weights=[1.0, 0.005]))


def test_rpo_sum_form_differs_from_trl_on_purpose():
    # Written reason: the paper's eq. 4.8 weights the *summed* NLL by eta * beta; TRL weights the token-mean
    # NLL by eta. Ours (default nll="sum") = DPO + eta beta (-log pi(y_w)); check against TRL's DPO part.
    x = random_pairs(12)
    got = ours("rpo", x, beta=0.01, eta=0.005).loss
    assert_parity(got, theirs("sigmoid", x, beta=0.01) + 0.005 * 0.01 * -x["policy_chosen_logps"])


def test_sft_token_mean_matches_trl_sft():
    x = random_pairs(13)
    got = ours("sft", {"policy_logps": x["policy_chosen_logps"], "lengths": x["chosen_lengths"]}, token_mean=True)
    assert_parity(got.loss, theirs("sft", x, beta=0.1))


def test_cdpo_matches_trl_label_smoothed_sigmoid_without_reference():
    # Written reason: TRL v1's DPO "sigmoid" ignores label_smoothing (cDPO was dropped in the v1 refactor).
    # The same expression survives in TRL's CPOTrainer "sigmoid" (reference-free), so compare with ref = 0.
    x = random_pairs(14)
    x |= {"ref_chosen_logps": torch.zeros(N, dtype=F64), "ref_rejected_logps": torch.zeros(N, dtype=F64)}
    stub = make_stub(CPOTrainer, alpha=0.0, loss_type="sigmoid", beta=0.1, label_smoothing=0.2)
    losses, _, _ = CPOTrainer.cpo_loss(stub, x["policy_chosen_logps"], x["policy_rejected_logps"])
    assert_parity(ours("cdpo", x, beta=0.1, epsilon=0.2).loss, losses)


# --------------------------------------------------------------------------- reference-free losses
def test_simpo_matches_trl_cpo_simpo():
    # TRL's `simpo_gamma` is gamma itself; ours is gamma / beta (the official SimPO code's convention).
    x = random_pairs(15)
    avg_c = x["policy_chosen_logps"] / x["chosen_lengths"]
    avg_r = x["policy_rejected_logps"] / x["rejected_lengths"]
    stub = make_stub(CPOTrainer, alpha=0.0, loss_type="simpo", beta=2.0, simpo_gamma=1.0, label_smoothing=0.0)
    losses, chosen_rewards, _ = CPOTrainer.cpo_loss(stub, avg_c, avg_r)
    out = ours("simpo", x, beta=2.0, gamma_beta_ratio=0.5)
    assert_parity(out.loss, losses)
    assert_parity(out.metrics["chosen_rewards"], chosen_rewards)


def test_hinge_reference_free_matches_trl_cpo_hinge():
    x = random_pairs(16)
    stub = make_stub(CPOTrainer, alpha=0.0, loss_type="hinge", beta=0.05, label_smoothing=0.0)
    losses, _, _ = CPOTrainer.cpo_loss(stub, x["policy_chosen_logps"], x["policy_rejected_logps"])
    assert_parity(ours("hinge", x, beta=0.05, reference_free=True).loss, losses)


def test_orpo_matches_trl_odds_ratio_loss_in_float32():
    # Written reason for float32: `ORPOTrainer.odds_ratio_loss` casts its inputs with `.float()`. TRL returns
    # lambda * log sigma(log odds ratio) per example and subtracts it from the NLL; ours includes the
    # per-sequence NLL -avglogp(y_w), added back here. Compared at 1e-6 on O(1) values.
    x = random_pairs(17, scale=1.0)
    x["chosen_lengths"], x["rejected_lengths"] = x["chosen_lengths"] + 8, x["rejected_lengths"] + 8
    avg_c = (x["policy_chosen_logps"] / x["chosen_lengths"]).float()
    avg_r = (x["policy_rejected_logps"] / x["rejected_lengths"]).float()
    stub = make_stub(ORPOTrainer, beta=0.1)
    losses, *_ = ORPOTrainer.odds_ratio_loss(stub, avg_c, avg_r)
    assert_parity(ours("orpo", x, lam=0.1).loss, -avg_c.double() - losses.double(), tol=1e-6)


# ----------------------------------------------------------------------------------------- KTO
def test_kto_matches_trl_kto():
    g = torch.Generator().manual_seed(18)
    policy = -5 - 10 * torch.rand(N, generator=g, dtype=F64)
    ref = policy + torch.randn(N, generator=g, dtype=F64)
    labels = torch.tensor([True, False, True, True, False, False])
    kl_policy = -5 - 10 * torch.rand(3, generator=g, dtype=F64)
    kl_ref = kl_policy - 0.5 + torch.randn(3, generator=g, dtype=F64)  # mean positive, so z0 > 0 is exercised
    z0 = kto_kl_baseline(kl_policy, kl_ref)
    assert z0 > 0
    params = dict(beta=0.1, desirable_weight=1.33, undesirable_weight=1.0)
    got = ours("kto", {"policy_logps": policy, "ref_logps": ref, "labels": labels, "kl_baseline": z0}, **params)
    stub = make_stub(KTOTrainer, calculate_KL=True, loss_type="kto", **params)
    stub._compute_kl_logps = lambda model, batch: KTOTrainer._compute_kl_logps(stub, model, batch)
    kl_ids, kl_attention, kl_completion, _ = encode(kl_policy, [2, 3, 1], first_id=2)
    for i in range(N):
        ids, attention, completion, _ = encode(policy[i : i + 1], [4], first_id=1)
        table = torch.cat([torch.zeros(1, dtype=F64), policy[i : i + 1], kl_policy])
        inputs = {
            "input_ids": ids, "attention_mask": attention, "completion_mask": completion,
            "label": labels[i : i + 1], "ref_logps": ref[i : i + 1], "KL_input_ids": kl_ids,
            "KL_attention_mask": kl_attention, "KL_completion_mask": kl_completion, "ref_KL_logps": kl_ref,
        }  # fmt: skip
        loss = KTOTrainer._compute_loss(stub, TableLM(table), inputs, return_outputs=False)
        assert abs(loss.item() - got.loss[i].item()) < 1e-6, i
