"""B-STaR monitoring metrics on hand-made rows against hand-computed values."""

import pytest

from ratchet.evaluate.bstar import balance_n_star, balance_one, balance_score, bstar_metrics, choose_temperature

T, F = True, False


def _rows(prompts):
    """prompts: list of (id, texts, correct, scores, extracted or None) -> (completions, judgments)."""
    completions, judgments = [], []
    for pid, texts, correct, scores, extracted in prompts:
        completions.append({"id": pid, "messages": [], "completions": [{"text": t} for t in texts]})
        judged = {"id": pid, "scores": scores, "correct": correct}
        if extracted is not None:
            judged["details"] = [{"extracted": e} for e in extracted]
        judgments.append(judged)
    return completions, judgments


# p1: "Answer: 3" and "Answer:  3" are the same text once whitespace is collapsed
P1 = ("p1", ["Answer: 3", "Answer:  3", "Answer: 4", "Work. Answer: 3"], [T, T, F, T], [0.9, 0.8, 0.95, 0.1],
      ["3", "3", "4", "3"])
P2 = ("p2", ["a", "b", "c", "d"], [F, F, F, F], [0.6, 0.2, 0.1, 0.0], None)
P3 = ("p3", ["s1", "s2", "s3", "s4"], [T, F, T, T], [0.7, 0.7, 0.9, 0.9], None)
P4 = ("p4", ["x", "y", "z", "w"], [T, None, F, F], [1.0, 0.0, 0.0, 0.0], None)  # unknown -> left out


def test_balance_one_formula():
    # 3 unique selected (score > 0.5), 2 of them correct, n* = 8: min(2/8, 1) * 2/3 = 1/6
    keys, scores, correct = ["a", "b", "c", "d"], [0.9, 0.9, 0.6, 0.1], [T, T, F, T]
    assert balance_one(keys, scores, correct, threshold=0.5, n_star=8) == pytest.approx(1 / 6)
    # n* = 1: min(2, 1) * 2/3
    assert balance_one(keys, scores, correct, threshold=0.5, n_star=1) == pytest.approx(2 / 3)
    assert balance_one(keys, scores, correct, threshold=0.95, n_star=8) == 0.0  # nothing selected
    assert balance_n_star(100, 12) == 9  # ceil(100 / 12)


def test_bstar_metrics_by_text():
    c, j = _rows([P1, P2, P3, P4])
    m = bstar_metrics(c, j, pairs_kept=7, threshold=0.5, n_star=2)
    # per prompt (p1, p2, p3); p4 has an unknown and is left out
    assert m["prompts"] == 3 and m["k"] == 4 and m["pairs_kept"] == 7
    assert m["pass_at_1"] == pytest.approx((0.75 + 0 + 0.75) / 3)
    assert m["pass_at_k"] == pytest.approx((1 + 0 + 1) / 3)
    # unique correct texts: p1 {"Answer: 3", "Work. Answer: 3"} = 2, p2 0, p3 3
    assert m["distinct_correct"] == pytest.approx((2 + 0 + 3) / 3)
    assert m["distinct_answers"] == pytest.approx((3 + 4 + 4) / 3)
    # top pick: p1 "Answer: 4" (0.95) wrong; p2 wrong; p3 tie s3/s4 at 0.9, both right
    assert m["best_of_k"] == pytest.approx(1 / 3)
    assert m["judge_discrimination"] == pytest.approx(0.5)  # solvable p1, p3: (0 + 1) / 2
    # balance, n* = 2, score > 0.5: p1 selects {"Answer: 3" (T), "Answer: 4" (F)}: min(1/2,1)*1/2 = 0.25;
    # p2 selects {a (F)}: 0; p3 selects all 4, 3 correct: min(3/2,1)*3/4 = 0.75
    assert m["balance_score"] == pytest.approx((0.25 + 0 + 0.75) / 3)
    assert bstar_metrics(c, j, k=1)["pass_at_k"] == pytest.approx(m["pass_at_1"])


def test_bstar_metrics_by_extracted_answer():
    c, j = _rows([P1, P2, P3])
    m = bstar_metrics(c, j, distinct_by="extracted", n_star=2)
    # p1 answers: correct {"3"} = 1, all {"3", "4"} = 2; p2, p3 have no "extracted": by text
    assert m["distinct_correct"] == pytest.approx((1 + 0 + 3) / 3)
    assert m["distinct_answers"] == pytest.approx((2 + 4 + 4) / 3)
    # p1 now selects {"3" (T), "4" (F)} = the same 0.25 as by text
    assert m["balance_score"] == pytest.approx((0.25 + 0 + 0.75) / 3)


def test_top_pick_ties_and_empty():
    # tie at 0.9 between a right and a wrong sample counts as half right
    c, j = _rows([("q", ["a", "b", "c"], [T, F, T], [0.9, 0.9, 0.1], None)])
    assert bstar_metrics(c, j)["best_of_k"] == pytest.approx(0.5)
    c, j = _rows([P4])
    m = bstar_metrics(c, j, pairs_kept=0)
    assert m["prompts"] == 0 and m["pass_at_1"] is None and m["pairs_kept"] == 0
    assert balance_score(c, j) is None


def test_judge_agreement_of_a_self_rewarding_judge_by_hand():
    # scores: the policy's own ratings; correct: the verifier's verdicts (verified.jsonl)
    c, j = _rows([("a", ["1", "2", "3", "4"], [F, T, F, F], [8, 9, 2, 1], None),   # top pick "2": right
                  ("b", ["1", "2", "3", "4"], [T, T, F, F], [1, 2, 7, 3], None),   # top pick "3": wrong
                  ("c", ["1", "2", "3", "4"], [T, F, T, F], [5, 5, 5, 1], None)])  # 3-way tie: 2 of 3 right
    m = bstar_metrics(c, j)
    agreement = (1 + 0 + 2 / 3) / 3
    random_pick = (1 / 4 + 2 / 4 + 2 / 4) / 3  # pass@1: a uniformly random sample's chance
    assert m["judge_agreement"] == pytest.approx(agreement) == pytest.approx(m["best_of_k"])
    assert m["judge_pick_vs_random"] == pytest.approx(agreement - random_pick)
    c, j = _rows([P4])  # no ground truth: no agreement
    assert bstar_metrics(c, j)["judge_agreement"] is None and bstar_metrics(c, j)["judge_pick_vs_random"] is None


def test_choose_temperature_by_balance():
    # n* = 2, score > 0.5
    # 0.5: unique selected {A}, correct: min(1/2,1)*1/1 = 0.5
    low = _rows([("q", ["A", "A", "A", "B"], [T, T, T, F], [1, 1, 1, 0], None)])
    # 1.0: unique selected {A, C}, both correct: min(2/2,1)*2/2 = 1.0
    mid = _rows([("q", ["A", "C", "D", "B"], [T, T, F, F], [1, 1, 0, 0], None)])
    # 1.2: nothing selected: 0
    high = _rows([("q", ["E", "F", "G", "H"], [F, F, F, F], [0, 0, 0, 0], None)])
    assert choose_temperature({0.5: low, 1.0: mid, 1.2: high}, n_star=2) == 1.0
    assert choose_temperature({1.0: mid, 0.7: mid}, n_star=2) == 0.7  # a tie goes to the lower temperature
    with pytest.raises(ValueError, match="no candidate"):
        choose_temperature({0.5: _rows([P4])})
