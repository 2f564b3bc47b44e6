"""SCoRe (Kumar et al. 2024): reward shaping on hand-made transcripts, the loss and its gradient by
hand, and the KL coefficient on attempt 1 in each stage."""

from __future__ import annotations

import pytest
import torch

from ratchet.judge.answer import AnswerJudge
from ratchet.losses import LOSSES, score_loss, score_rewards

T = torch.float64
PROMPT = {"id": "p", "answer": "12"}
# four episodes of one prompt: wrong->right, right->right, right->wrong, wrong->wrong
FIRST = ["5 + 6 = 11\nAnswer: 11", "5 + 7 = 12\nAnswer: 12", "5 + 7 = 12\nAnswer: 12", "Answer: 10"]
SECOND = ["Let me fix it: 5 + 7 = 12\nAnswer: 12", "Answer: 12", "Oops, 5 + 7 = 13\nAnswer: 13", "Answer: 9"]


def _rewards(texts):
    return torch.tensor([[j.score for j in AnswerJudge().judge(PROMPT, texts)]], dtype=T)


def test_transcripts_are_judged_as_expected():
    torch.testing.assert_close(_rewards(FIRST), torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=T))
    torch.testing.assert_close(_rewards(SECOND), torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=T))


def test_stage_one_rewards_only_the_second_attempt():
    t1, t2 = score_rewards(_rewards(FIRST), _rewards(SECOND), stage=1, alpha=10.0)
    torch.testing.assert_close(t1, torch.zeros(1, 4, dtype=T))
    torch.testing.assert_close(t2, torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=T))


def test_stage_two_adds_the_shaped_bonus_to_attempt_two():
    # r2 + alpha (r2 - r1): wrong->right 1 + 10 = 11, right->right 1, right->wrong 0 - 10 = -10, wrong->wrong 0
    t1, t2 = score_rewards(_rewards(FIRST), _rewards(SECOND), stage=2, alpha=10.0)
    torch.testing.assert_close(t1, torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=T))
    torch.testing.assert_close(t2, torch.tensor([[11.0, 1.0, -10.0, 0.0]], dtype=T))


def test_stage_two_loss_and_gradient_by_hand():
    # at the reference (KL 0): A2 = t2_i - mean of the others = [11 + 3, 1 - 1/3, -10 - 4, 0 - 2/3]
    # A1 (t1 = r1 = [0, 1, 1, 0]) = [-2/3, 2/3, 2/3, -2/3]; dL/dlogp = -A / k
    p1 = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], dtype=T, requires_grad=True)
    p2 = torch.tensor([[-2.0, -1.0, -2.0, -1.0]], dtype=T, requires_grad=True)
    out = score_loss(policy_first_logps=p1, ref_first_logps=p1.detach(), policy_second_logps=p2,
                     ref_second_logps=p2.detach(), first_rewards=_rewards(FIRST), second_rewards=_rewards(SECOND),
                     **LOSSES["score"].make_params().__dict__)
    a1 = torch.tensor([[-2 / 3, 2 / 3, 2 / 3, -2 / 3]], dtype=T)
    a2 = torch.tensor([[14.0, 2 / 3, -14.0, -2 / 3]], dtype=T)
    expected = -((a1 * p1) + (a2 * p2)).detach().mean(-1)
    torch.testing.assert_close(out.loss, expected)
    out.loss.sum().backward()
    torch.testing.assert_close(p1.grad, -a1 / 4)
    torch.testing.assert_close(p2.grad, -a2 / 4)
    assert float(out.metrics["wrong_to_right"]) == 0.25 and float(out.metrics["right_to_wrong"]) == 0.25
    assert float(out.metrics["first_rewards"]) == 0.5 and float(out.metrics["second_rewards"]) == 0.5


@pytest.mark.parametrize("stage, first_beta", [(1, 0.1), (2, 0.01)])
def test_attempt_one_kl_is_beta2_in_stage_one(stage, first_beta):
    # equal task rewards; attempt 1's KL estimates [1, 0, 0, 0] -> A1 = -beta * [1, -1/3, -1/3, -1/3]
    p1 = torch.zeros(1, 4, dtype=T, requires_grad=True)
    ref1 = torch.tensor([[-1.0, 0.0, 0.0, 0.0]], dtype=T)
    zeros = torch.zeros(1, 4, dtype=T)
    out = score_loss(policy_first_logps=p1, ref_first_logps=ref1, policy_second_logps=zeros, ref_second_logps=zeros,
                     first_rewards=zeros, second_rewards=zeros, stage=stage, alpha=10.0, beta1=0.01, beta2=0.1)
    out.loss.sum().backward()
    a1 = -first_beta * torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]], dtype=T)
    torch.testing.assert_close(p1.grad, -a1 / 4)


def test_params_are_the_paper_defaults_and_checked():
    assert LOSSES["score"].make_params() == LOSSES["score"].params(stage=2, alpha=10.0, beta1=0.01, beta2=0.1)
    assert LOSSES["score"].data == "two_turn"
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        LOSSES["score"].make_params(stage=3)
