"""SPO (Swamy et al. 2024): each sample's win rate against the prompt's OTHER samples, by hand
(verifier, scores, pairwise judge), against SPPO's ``win_rates`` that counts the self-comparison; and
one on-policy RLOO round of the tiny model with ``online.reward: win_rate``."""

import json

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.data.pairing import win_rates
from ratchet.data.revision import PromptCompletion
from ratchet.judge.base import Judgment
from ratchet.loop.rollouts import others_win_rates, win_rate_reward
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides


def test_win_rate_against_the_others_by_hand():
    verifier = {"scores": [1, 0, 1, 0], "correct": [True, False, True, False]}
    # a right sample beats 2 wrong ones and ties the other right one: (1 + 1 + 1/2) / 3; a wrong one: (0 + 0 + 1/2) / 3
    assert others_win_rates(verifier) == pytest.approx([2.5 / 3, 0.5 / 3, 2.5 / 3, 0.5 / 3])
    # SPPO's win_rates counts the comparison with itself (1/2) and divides by K: (2.5 + 0.5) / 4
    assert win_rates(verifier) == pytest.approx([3 / 4, 1 / 4, 3 / 4, 1 / 4])
    scores = {"scores": [3.0, 1.0, 2.0], "correct": [None] * 3}  # no verdicts: the higher score wins
    assert others_win_rates(scores) == pytest.approx([1.0, 0.0, 0.5])
    pairwise = {"scores": [0.75, 0.25, 0.5], "correct": [None] * 3,
                "details": [{"wins": 3.0, "comparisons": 4}, {"wins": 1.0, "comparisons": 4},
                            {"wins": 0.0, "comparisons": 0}]}
    assert others_win_rates(pairwise) == pytest.approx([0.75, 0.25, 0.5])
    with pytest.raises(ValueError, match="at least 2 samples"):
        others_win_rates({"scores": [1.0], "correct": [None]})


class _Verifier:
    def judge(self, prompt, completions):
        return [Judgment(score=float(c == "7"), correct=c == "7", detail={"extracted": c}) for c in completions]


def test_win_rate_reward_keeps_the_verdict_and_the_judges_score():
    seqs = [PromptCompletion([], t, True) for t in ("7", "8", "9")]
    out = win_rate_reward(_Verifier())({"id": "q"}, seqs)
    assert [j.score for j in out] == pytest.approx([1.0, 0.25, 0.25])
    assert [j.correct for j in out] == [True, False, False]
    assert out[0].detail == {"extracted": "7", "judge_score": 1.0}


def test_unknown_online_reward_is_refused():
    with pytest.raises(ConfigError, match="win_rate"):
        load_config(None, ["online.reward=winrate"])


@pytest.mark.slow
def test_spo_round_rewards_win_rates(tmp_path, tiny_model_dir, length_judge):
    o = tiny_run_overrides(tmp_path, tiny_model_dir) + ["name=spo", "train.loss.name=rloo", "online.reward=win_rate",
                                                        "train.reference=initial"]
    summary = run_loop(load_config(None, o), progress=False)
    rollouts = [json.loads(x) for x in (tmp_path / "runs" / "spo" / "round_1" / "train" / "rollouts.jsonl")
                .read_text().splitlines()]
    assert len(rollouts) == 4 and [r["round"] for r in summary["rounds"]] == [0, 1]
    for row in rollouts:  # the length judge's scores -> win rates against the other two samples
        lengths = [d["judge_score"] for d in row["details"]]
        expected = [sum(1.0 if a > b else 0.5 if a == b else 0.0 for b in lengths[:i] + lengths[i + 1:]) / 2
                    for i, a in enumerate(lengths)]
        assert row["scores"] == pytest.approx(expected)
        assert sum(row["scores"]) == pytest.approx(1.5)  # K(K-1)/2 games, one point each, over K-1 opponents
