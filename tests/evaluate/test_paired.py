"""Intervals of held-out metrics and the paired tests of the gate, against values derived by hand."""

from __future__ import annotations

import math

import pytest

from ratchet.evaluate.metrics import (heldout_metric, mcnemar_exact, mean_interval, metric_interval,
                                      paired_bootstrap, paired_comparison, wilson_interval, win_rate)


@pytest.mark.parametrize("b, c, greater, less, two_sided", [
    # b = solved only by the new model, c = only by the old; under H0, B ~ Binomial(b + c, 1/2)
    (5, 0, 0.03125, 1.0, 0.0625),        # P(B >= 5 | n=5) = 0.5^5 = 1/32; two-sided 2/32
    (0, 5, 1.0, 0.03125, 0.0625),        # the mirror image
    (3, 1, 0.3125, 0.9375, 0.625),       # n=4: P(B >= 3) = (C(4,3) + C(4,4)) / 16 = 5/16; P(B <= 3) = 15/16
    (8, 2, 0.0546875, 0.9892578125, 0.109375),  # n=10: (C(10,8) + C(10,9) + C(10,10)) / 1024 = (45+10+1)/1024
    (6, 1, 0.0625, 0.9921875, 0.125),    # n=7: (C(7,6) + C(7,7)) / 128 = 8/128
    (2, 2, 0.6875, 0.6875, 1.0),         # n=4: (6+4+1)/16 = 11/16 each way; 2 * 11/16 > 1 -> 1
    (0, 0, 1.0, 1.0, 1.0),               # no disagreement: no evidence either way
])
def test_mcnemar_exact_hand_computed(b, c, greater, less, two_sided):
    assert mcnemar_exact(b, c) == pytest.approx(greater, abs=1e-15)
    assert mcnemar_exact(b, c, "less") == pytest.approx(less, abs=1e-15)
    assert mcnemar_exact(b, c, "two-sided") == pytest.approx(two_sided, abs=1e-15)


def test_mcnemar_exact_bad_input():
    with pytest.raises(ValueError, match="b, c >= 0"):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact(1, 2, "bigger")


def test_wilson_interval_hand_computed():
    # 47 of 200 (the demo's round 0), z = 1.959964: p = 0.235, z^2/n = 0.019207, so
    # center = (p + z^2/2n) / (1 + z^2/n) = 0.244604 / 1.019207 = 0.239994 and
    # half = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 1.959964 * sqrt(0.00089888 + 0.00002401) / 1.019207
    #      = 0.058420  ->  [0.181574, 0.298414]
    assert wilson_interval(47, 200) == pytest.approx((0.181574, 0.298414), abs=1e-6)
    # 0 of 10: center = half = (z^2/20) / (1 + z^2/10) = 0.192073 / 1.384146 = 0.138766 -> [0, 0.277533]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)


def test_mean_interval_known_cases():
    assert mean_interval([0.7] * 9) == pytest.approx((0.7, 0.7))  # every resample has the same mean
    # 50 zeros and 50 ones: resampled means ~ Binomial(100, 1/2) / 100, sd 0.05, whose 2.5% and
    # 97.5% quantiles are 0.40 and 0.60 (the normal approximation: 0.5 -+ 1.96 * 0.05 = 0.402, 0.598)
    low, high = mean_interval([0, 1] * 50, n_boot=20000)
    assert low == pytest.approx(0.40, abs=0.011) and high == pytest.approx(0.60, abs=0.011)
    assert mean_interval([1, 5, 2], seed=4) == mean_interval([1, 5, 2], seed=4)  # seeded
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")])


def test_win_rate_interval_is_the_mean_interval():
    outcomes = [1, 1, 0.5, 0, 1, 0, 1, 0.5]
    wr = win_rate(outcomes, seed=2)
    assert (wr.low, wr.high) == mean_interval(outcomes, seed=2)


def test_paired_bootstrap_known_answers():
    # every problem better by 1: every resampled mean difference is 1 > 0, p = (1 + 0) / (1 + n_boot)
    assert paired_bootstrap([2, 3, 4], [1, 2, 3], n_boot=999) == pytest.approx(1 / 1000)
    # no difference anywhere: every resampled difference is 0, p = (1 + n_boot) / (1 + n_boot)
    assert paired_bootstrap([1, 0, 1], [1, 0, 1]) == 1.0
    # differences +1 and -1: a resample of two has mean +1 (1/4), 0 (1/2) or -1 (1/4), so P(mean <= 0) = 3/4
    assert paired_bootstrap([1, 0], [0, 1], n_boot=20000) == pytest.approx(0.75, abs=0.015)
    with pytest.raises(ValueError, match="one old score per new score"):
        paired_bootstrap([1, 2], [1])


def test_paired_comparison_counts_discordant_problems():
    new = [1, 1, 1, 1, 1, 0, 1, 0]
    old = [0, 0, 0, 0, 0, 0, 1, 0]  # five problems only the new model solved, none only the old
    result = paired_comparison(new, old, test="mcnemar_exact")
    assert result.discordant == (5, 0) and result.p_value == 0.03125 and result.delta == pytest.approx(5 / 8)
    assert result.n == 8 and result.test == "mcnemar_exact"
    scored = paired_comparison([0.5, 0.9], [0.1, 0.2], test="paired_bootstrap", n_boot=99)
    assert scored.discordant is None and scored.p_value == pytest.approx(0.01) and scored.delta == pytest.approx(0.55)
    with pytest.raises(ValueError, match="1 \\(correct\\) or 0"):
        paired_comparison([0.5], [1], test="mcnemar_exact")
    with pytest.raises(ValueError, match="unknown test"):
        paired_comparison([1], [1], test="t")


def test_heldout_metrics_carry_their_interval():
    acc = heldout_metric(None, [True, False, None, True], [1, 0, 0, 1])
    assert acc["interval"] == pytest.approx(list(wilson_interval(2, 4)))
    scores = heldout_metric("mean_score", [None] * 3, [1.0, 2.0, 3.0])
    assert scores["interval"] == pytest.approx(list(mean_interval([1.0, 2.0, 3.0])))
    assert scores["interval"][0] >= 1.0 and scores["interval"][1] <= 3.0


def test_metric_interval_of_each_metric():
    assert metric_interval({"metric": "accuracy", "accuracy": 0.8, "correct": 8, "n": 10}) == wilson_interval(8, 10)
    # an accuracy without the count (older or revision metrics): the count is accuracy * n
    assert metric_interval({"metric": "accuracy", "accuracy": 0.8, "n": 10}) == wilson_interval(8, 10)
    assert metric_interval({"metric": "win_rate", "win_rate": 0.6, "low": 0.5, "high": 0.7}) == (0.5, 0.7)
    assert metric_interval({"metric": "mean_score", "mean_score": 2.0, "interval": [1.5, 2.5]}) == (1.5, 2.5)
    assert metric_interval({"metric": "mean_score", "mean_score": 2.0, "n": 3}) is None  # scores not kept
    assert metric_interval({"metric": "accuracy", "accuracy": 0.8}) is None
    assert math.isclose(metric_interval({"accuracy": 1.0, "correct": 3, "n": 3})[1], 1.0)  # metric defaults to accuracy
