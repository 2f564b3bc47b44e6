"""pass@k against the closed form and brute force; accuracy; win-rate with swapped judge orders."""

from __future__ import annotations

import itertools
import math

import pytest

from ratchet.evaluate.metrics import accuracy, mean_pass_at_k, pass_at_k, win_rate
from ratchet.generate.base import Sample
from ratchet.judge.llm_judge import PairwiseJudge


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_closed_form_and_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            closed = 1 - math.comb(n - c, k) / math.comb(n, k)
            subsets = list(itertools.combinations(range(n), k))  # samples 0..c-1 are the correct ones
            enumerated = sum(any(i < c for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12) == pytest.approx(enumerated)


def test_pass_at_k_edges_and_large_n():
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)  # binomials this size overflow floats
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)


def test_mean_pass_at_k():
    assert mean_pass_at_k([(4, 0), (4, 4), (4, 2)], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"problem\(s\) \[1\]"):
        mean_pass_at_k([(5, 1), (2, 1)], 3)


def test_accuracy_leaves_out_missing_verdicts():
    assert accuracy([True, False, None, True]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="without a single verdict"):
        accuracy([None, None])


def test_win_rate_counts_and_interval():
    wr = win_rate([1, 1, 1, 0.5, 0, 1, 0.5, 1, 0, 1] * 5, n_boot=4000)
    assert wr.rate == pytest.approx(0.7) and (wr.wins, wr.ties, wr.losses, wr.n) == (30, 10, 10, 50)
    assert wr.low < wr.rate < wr.high and 0.55 < wr.low and wr.high < 0.85
    assert win_rate([1, 0, 0.5] * 4, seed=3) == win_rate([1, 0, 0.5] * 4, seed=3)  # reproducible
    assert win_rate([0.5] * 7).low == win_rate([0.5] * 7).high == 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate([2.0])


class _Judge:
    """Fake judge model: prefers the longer answer, or always the answer shown first."""

    def __init__(self, biased: bool):
        self.biased = biased

    def sample(self, prompts, params):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            a = text.split("[Answer A]\n")[1].split("\n[End of answer A]")[0]
            b = text.split("[Answer B]\n")[1].split("\n[End of answer B]")[0]
            verdict = "A" if self.biased or len(a) > len(b) else "B" if len(b) > len(a) else "C"
            out.append([Sample(f"[[{verdict}]]", 1, "stop")])
        return out


def test_win_rate_against_gold_with_swapped_orders():
    model = ["a detailed answer one", "x", "another long answer", "yy"]
    gold = ["short", "a long gold answer", "gold", "zz"]
    fair = PairwiseJudge(_Judge(biased=False)).compare("q", list(zip(model, gold)))
    assert fair == [1.0, 0.0, 1.0, 0.5]
    assert win_rate(fair).rate == pytest.approx(0.625)
    # A judge that always picks the first answer shown flips with the order: every pair ties.
    biased = PairwiseJudge(_Judge(biased=True)).compare("q", list(zip(model, gold)))
    assert biased == [0.5] * 4 and win_rate(biased).rate == 0.5
    # Swapping which side is the model's mirrors every outcome.
    swapped = PairwiseJudge(_Judge(biased=False)).compare("q", list(zip(gold, model)))
    assert [1 - o for o in swapped] == fair
