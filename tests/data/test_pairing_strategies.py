"""Pair strategies and unpaired (KTO) rows on hand-made rows; expected outputs derived in comments."""

import math
import random

import pytest

from ratchet.data.pairing import (RA_TEMPLATES, build_pairs, build_unpaired, dstc_select, rso_sample,
                                  unpaired_from_pairs)


def _row(texts, reasons=None, **extra):
    return {"id": "p", "messages": [{"role": "user", "content": "q"}], **extra,
            "completions": [{"text": t, "finish_reason": (reasons or ["eos"] * len(texts))[i]}
                            for i, t in enumerate(texts)]}


def _pairs(row, scores, strategy, max_pairs=10, correct=None, **params):
    judged = {"id": "p", "scores": scores, **({"correct": correct} if correct is not None else {})}
    return build_pairs([row], [judged], strategy=strategy, max_pairs_per_prompt=max_pairs, **params)


def _cr(pairs):
    return {(p["chosen"], p["rejected"]) for p in pairs}


def test_correct_vs_incorrect_leaves_out_unknown_correctness():
    # "maybe" has correct=None (e.g. a sandbox error): neither chosen nor rejected
    row = _row(["right", "wrong", "maybe"])
    pairs = _pairs(row, [1, 0, 0], "correct_vs_incorrect", correct=[True, False, None])
    assert _cr(pairs) == {("right", "wrong")}


def test_best_vs_random():
    # best = "b" (1.0; its duplicate at index 3 is the same text); strictly lower: "a" (0.5), "c" (0.0)
    row = _row(["a", "b", "c", "b"])
    assert _cr(_pairs(row, [0.5, 1.0, 0.0, 1.0], "best_vs_random")) == {("b", "a"), ("b", "c")}
    assert len(_pairs(row, [0.5, 1.0, 0.0, 1.0], "best_vs_random", max_pairs=1)) == 1
    assert _pairs(_row(["a", "b"]), [1.0, 1.0], "best_vs_random") == []  # nothing strictly lower


def test_score_margin():
    # distinct texts a (1.0), b (0.5), c (0.0); differences: a-b 0.5, a-c 1.0, b-c 0.5
    row = _row(["a", "b", "c", "b"])
    scores = [1.0, 0.5, 0.0, 0.5]
    assert _cr(_pairs(row, scores, "score_margin", margin=0.5)) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert _cr(_pairs(row, scores, "score_margin", margin=0.6)) == {("a", "c")}
    two = _pairs(row, scores, "score_margin", max_pairs=2, margin=0.5)
    assert len(two) == 2 and _cr(two) <= {("a", "b"), ("a", "c"), ("b", "c")}
    with pytest.raises(ValueError, match="margin must be > 0"):
        _pairs(row, scores, "score_margin", margin=0)


def test_rso_sample_limits():
    scores = [0.2, 0.9, 0.5, 0.7]
    # beta -> 0: each pass accepts only the current maximum, so the top-3 in reward order
    assert rso_sample(scores, 3, 1e-9, random.Random(0)) == [1, 3, 2]
    # beta -> inf: exp(0) = 1, everything in the (shuffled) pool is accepted in the first pass,
    # so the result is a uniform random 2-subset: each index is in it with probability 1/2
    counts = [0] * 4
    for seed in range(400):
        picked = rso_sample(scores, 2, 1e9, random.Random(seed))
        assert len(set(picked)) == 2
        for i in picked:
            counts[i] += 1
    assert all(abs(c / 400 - 0.5) < 0.1 for c in counts)


def test_rso_sample_acceptance_probability():
    # scores [1, 0], beta 1, m 1: pool order [0, 1] (prob 1/2) accepts 0 at once; order [1, 0]
    # gives 1 a chance exp((0 - 1)/1) first. So P(result == [1]) = 0.5 * e^-1 = 0.1839.
    hits = sum(rso_sample([1.0, 0.0], 1, 1.0, random.Random(s)) == [1] for s in range(3000))
    assert abs(hits / 3000 - 0.5 * math.exp(-1)) < 0.025


def test_rso_pairs_first_round():
    # beta -> 0 accepts b (0.9), d (0.7), c (0.5), a (0.2); first-round pairs (b, d), (c, a)
    row = _row(["a", "b", "c", "d"])
    scores = [0.2, 0.9, 0.5, 0.7]
    pairs = _pairs(row, scores, "rso", beta=1e-9, num_samples=4)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "d"), ("c", "a")]
    capped = _pairs(row, scores, "rso", max_pairs=1, beta=1e-9, num_samples=4)
    assert [(p["chosen"], p["rejected"]) for p in capped] == [("b", "d")]
    # equal scores give no pair: accepted order is the two 1.0s, then the two 0.0s
    assert _pairs(row, [1.0, 1.0, 0.0, 0.0], "rso", beta=1e-9, num_samples=4) == []


def test_gold_vs_samples():
    # gold = "Answer: 7" from row["answer"]; samples scoring <= 1.0 - 0.5: "Answer: 8" (dup once), "Answer: 9"
    row = _row(["Answer: 7", "Answer: 8", "Answer: 9", "Answer: 8"], ["eos", "eos", "length", "eos"], answer="7")
    pairs = _pairs(row, [1, 0, 0, 0], "gold_vs_samples", gold_template="Answer: {gold}")
    assert _cr(pairs) == {("Answer: 7", "Answer: 8"), ("Answer: 7", "Answer: 9")}
    assert all(p["chosen_complete"] and p["chosen_score"] == 1.0 for p in pairs)
    assert {p["rejected"]: p["rejected_complete"] for p in pairs} == {"Answer: 8": True, "Answer: 9": False}
    # lowest first: "c" (0.0) before "b" (0.4); "a" (1.0) is not worse. row["gold"] wins over "answer"
    row = _row(["a", "b", "c"], answer="7", gold="The sum is 7.")
    assert _cr(_pairs(row, [1.0, 0.4, 0.0], "gold_vs_samples", max_pairs=1)) == {("The sum is 7.", "c")}
    with pytest.raises(ValueError, match="neither 'gold' nor 'answer'"):
        _pairs(_row(["a"]), [0.0], "gold_vs_samples")


def test_dstc_select_minimax():
    #        t0 t1 t2 t3  | passes
    # c0     1  1  0  1   | 3
    # c1     1  0  0  1   | 2
    # c2     1  1  1  1   | 4   <- j' (most passes)
    # c3     0  0  0  1   | 1
    # passes 3  2  1  4
    # k' = strictest test c2 passes = t2 (1); k* = most lenient test someone fails = t0 (3);
    # j* = a code failing t0 other than c2 with fewest passes = c3
    m = [[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert dstc_select(m) == (2, 2, 3, 0)
    # ties go to the lowest index: k' between t0, t1 (2 each) -> t0; k* likewise t0;
    # codes failing t0: c2 (0 passes), c3 (1) -> c2
    assert dstc_select([[1, 0], [1, 1], [0, 0], [0, 1]]) == (1, 0, 2, 0)
    assert dstc_select([[1, 1], [1, 1]]) is None  # every code passes every test
    assert dstc_select([[0, 0], [0, 0]]) is None  # the chosen code passes nothing
    # j' = c0 (tie -> lowest), k* = t1 (2 of 3 pass); the only code failing t1 is c0 itself
    assert dstc_select([[1, 0], [0, 1], [0, 1]]) is None


def test_dstc_pairs_concatenate_code_and_test():
    m = [[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    row = _row(["code0", "code1", "code2", "code3"], tests=["t0", "t1", "t2", "t3"])
    judged = {"id": "p", "scores": [0.75, 0.5, 1.0, 0.25], "details": [{"passed": r} for r in m]}
    [pair] = build_pairs([row], [judged], strategy="dstc", max_pairs_per_prompt=2)
    assert pair["chosen"] == "code2\n\nt2" and pair["rejected"] == "code3\n\nt0"
    assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.25)  # 4/4 and 1/4 tests passed
    [pair] = build_pairs([row], [judged], strategy="dstc", max_pairs_per_prompt=1, concat="{test}|{code}")
    assert pair["chosen"] == "t2|code2"
    with pytest.raises(ValueError, match="needs row\\['tests'\\] and judged\\['details'\\]\\[j\\]\\['passed'\\]"):
        build_pairs([row], [{"id": "p", "scores": [0] * 4}], strategy="dstc", max_pairs_per_prompt=1)
    with pytest.raises(ValueError, match="4 codes x 4 tests"):
        build_pairs([row], [{**judged, "details": judged["details"][:3] + [{"passed": [1]}]}], strategy="dstc",
                    max_pairs_per_prompt=1)


def _contents(pair):
    return "\n".join(m["content"] for m in pair["messages"])


def test_reward_augmented_duplicates_and_swaps():
    row = _row(["good", "bad"])
    pos, neg = _pairs(row, [8.0, 3.5], "reward_augmented", template="paper")
    # positive-goal copy: s(8) + x, good > bad; the integer score is printed without ".0"
    assert pos["messages"][0] == {"role": "system", "content": RA_TEMPLATES["paper"].format(score="8")}
    assert (pos["chosen"], pos["rejected"], pos["chosen_score"]) == ("good", "bad", 8.0)
    # negative-goal copy: s(3.5) + x, the responses swapped: chosen is the original rejected
    assert neg["messages"][0]["content"].endswith("Overall score: 3.5.")
    assert (neg["chosen"], neg["rejected"], neg["chosen_score"], neg["rejected_score"]) == ("bad", "good", 3.5, 8.0)
    assert all(_contents(p).count("Overall score") == 1 for p in (pos, neg))
    assert row["messages"] == [{"role": "user", "content": "q"}]  # the input row is not modified


def test_reward_augmented_options():
    row = _row(["good", "bad"])
    pos, _ = _pairs(row, [1.0, 0.0], "reward_augmented", template="unit", goal_in="user")
    assert pos["messages"] == [{"role": "user", "content": RA_TEMPLATES["unit"].format(score="1") + "\n\nq"}]
    row["messages"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    pos, neg = _pairs(row, [0.75, 0.0], "reward_augmented", template="Target {score}.", top_score=1.0)
    assert pos["messages"][0] == {"role": "system", "content": "Target 0.75.\n\nBe brief."}
    assert neg["messages"][0]["content"] == "Target 0.\n\nBe brief."
    # base correct_vs_incorrect: 1 correct x 2 incorrect = 2 pairs -> 4 rows
    assert len(_pairs(_row(["r", "w1", "w2"]), [1, 0, 0], "reward_augmented", base="correct_vs_incorrect")) == 4
    with pytest.raises(ValueError, match="contain '\\{score\\}'"):
        _pairs(row, [1.0, 0.0], "reward_augmented", template="no placeholder")
    with pytest.raises(ValueError, match="base must be another strategy"):
        _pairs(row, [1.0, 0.0], "reward_augmented", base="reward_augmented")


def test_reward_augmented_goal_suits_a_unit_judge_by_default():
    from ratchet.data.pairing import goal_messages, inference_goal

    row = _row(["good", "bad"])
    pos, neg = _pairs(row, [1.0, 0.0], "reward_augmented")  # the answer judge's 0/1: the unit scale
    assert pos["messages"][0]["content"] == RA_TEMPLATES["unit"].format(score="1")
    assert neg["messages"][0]["content"] == RA_TEMPLATES["unit"].format(score="0")
    with pytest.raises(ValueError, match="prompt 'p': score 0 lies outside template 'paper'"):
        _pairs(row, [1.0, 0.0], "reward_augmented", template="paper")  # 1 would be the paper scale's lowest
    with pytest.raises(ValueError, match="needs top_score"):
        _pairs(row, [1.0, 0.0], "reward_augmented", template="Target {score}.")
    # at inference the highest goal of the scale, in the same place as in training
    assert (inference_goal(), inference_goal("paper"), inference_goal("Target {score}.", 5)) == (1, 10, 5)
    assert goal_messages(row["messages"], inference_goal()) == [pos["messages"][0], row["messages"][0]]


def test_unknown_strategy_parameter_is_named():
    row = _row(["a", "b"])
    with pytest.raises(ValueError, match="pair strategy 'best_vs_worst' has no parameter 'margin'"):
        _pairs(row, [1.0, 0.0], "best_vs_worst", margin=0.5)
    with pytest.raises(ValueError, match="'rso' has no parameter 'betta'.*'beta', 'num_samples'"):
        _pairs(row, [1.0, 0.0], "rso", betta=0.5)


def test_build_unpaired_balances_and_caps():
    # correct: r1 (twice, counted once), w1, w2 false, r2 unknown (left out)
    row = _row(["r1", "w1", "w2", "r1", "r2"], ["eos", "length", "eos", "eos", "eos"])
    judged = {"id": "p", "scores": [1, 0, 0, 1, 0], "correct": [True, False, False, True, None]}
    rows = build_unpaired([row], [judged], max_per_prompt=10)
    assert sorted((r["completion"], r["label"]) for r in rows) == [("r1", True), ("w1", False), ("w2", False)]
    assert {r["completion"]: r["complete"] for r in rows}["w1"] is False
    assert set(rows[0]) == {"id", "messages", "completion", "label", "complete"}
    # cap 2 alternates the classes: one desirable, one undesirable
    assert sorted(r["label"] for r in build_unpaired([row], [judged], max_per_prompt=2)) == [False, True]
    # threshold labeller: score >= 0.5 (r2's unknown correctness does not matter here; it scores 0)
    rows = build_unpaired([row], [judged], labeller="threshold", threshold=0.5, max_per_prompt=10)
    assert sorted((r["completion"], r["label"]) for r in rows) == [("r1", True), ("r2", False), ("w1", False),
                                                                    ("w2", False)]
    with pytest.raises(ValueError, match="labeller 'correct' has no parameter 'threshold'"):
        build_unpaired([row], [judged], threshold=0.5)


def test_unpaired_from_pairs():
    pair = {"id": "p", "messages": [], "chosen": "c", "rejected": "r", "chosen_score": 1, "rejected_score": 0,
            "chosen_complete": True, "rejected_complete": False}
    assert [(u["completion"], u["label"], u["complete"]) for u in unpaired_from_pairs([pair])] == [
        ("c", True, True), ("r", False, False)]


def test_drop_truncated_removes_cut_completions_and_their_judgments():
    from ratchet.data.pairing import drop_truncated

    row = {"id": "p", "messages": [], "completions": [
        {"text": "a", "finish_reason": "eos"}, {"text": "b", "finish_reason": "length"},
        {"text": "c", "finish_reason": "stop"}, {"text": "d"}]}
    judged = {"id": "p", "scores": [1.0, 0.0, 0.0, 1.0], "correct": [True, False, False, True],
              "details": [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}], "note": "kept"}
    rows, judgments = drop_truncated([row], [judged])
    assert [c["text"] for c in rows[0]["completions"]] == ["a", "c", "d"]
    assert judgments[0] == {"id": "p", "scores": [1.0, 0.0, 1.0], "correct": [True, False, True],
                            "details": [{"n": 0}, {"n": 2}, {"n": 3}], "note": "kept"}
    assert len(row["completions"]) == 4  # inputs untouched
    pairs = build_pairs(rows, judgments, strategy="correct_vs_incorrect", max_pairs_per_prompt=10)
    assert {p["rejected"] for p in pairs} == {"c"}  # the cut "b" is never the rejected answer


def test_dno_ranks_samples_with_the_gold_and_keeps_large_margins():
    # candidates: gold "Answer: 7" (gold_score 1.0) and "a" 1.0, "b" 0.6, "c" 0.2, "a" again (one candidate).
    # best: the gold (ties with "a" at 1.0 go to the gold); margin 0.5 keeps rejected scores <= 0.5: only "c"
    # ("b" at 0.6 is within the margin, "a" ties).
    row = _row(["a", "b", "c", "a"], answer=7)
    pairs = _pairs(row, [1.0, 0.6, 0.2, 1.0], "dno", gold_template="Answer: {gold}")
    assert _cr(pairs) == {("Answer: 7", "c")}
    assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"], pairs[0]["chosen_complete"]) == (1.0, 0.2, True)
    # margin 0.3: "b" (0.6 <= 0.7) joins, lowest first; max_pairs=1 keeps "c"
    assert [p["rejected"] for p in _pairs(row, [1.0, 0.6, 0.2, 1.0], "dno", margin=0.3)] == ["c", "b"]
    assert _cr(_pairs(row, [1.0, 0.6, 0.2, 1.0], "dno", margin=0.3, max_pairs=1)) == {("7", "c")}
    # a sample the judge scores above gold_score is the chosen one, and the gold may be rejected:
    # gold 0.5; best "a" 3.0; margin 0.5 keeps gold 0.5, "b" 0.6 and "c" 0.2, lowest first: c, gold, b
    pairs = _pairs(row, [3.0, 0.6, 0.2, 3.0], "dno", gold_score=0.5)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "c"), ("a", "7"), ("a", "b")]
    assert _pairs(_row(["x"], answer=1), [1.0], "dno", gold_template="x") == []  # the gold is the only candidate
    with pytest.raises(ValueError, match="margin must be > 0"):
        _pairs(row, [1.0, 0.6, 0.2, 1.0], "dno", margin=0)
    with pytest.raises(Exception, match="neither 'gold' nor 'answer'"):
        _pairs(_row(["a"]), [0.0], "dno")


def test_win_rates_count_ties_as_half_and_include_the_self_comparison():
    from ratchet.data.pairing import win_rates

    # verifier, K = 4, verdicts [T, F, F, T]: a correct sample beats the 2 incorrect (1 each) and ties
    # itself and the other correct one (1/2 each): (2 + 1) / 4 = 0.75; an incorrect one ties itself and
    # the other incorrect one: (0.5 + 0.5) / 4 = 0.25. Scores are ignored when every verdict is known.
    assert win_rates({"scores": [9, 1, 5, 0], "correct": [True, False, False, True]}) == [0.75, 0.25, 0.25, 0.75]
    # scores [3, 1, 3, 2] (a verdict unknown, so scores decide): 3 beats 1 and 2, ties itself and the other
    # 3: (2 + 1) / 4 = 0.75; 1 ties itself only: 0.5 / 4 = 0.125; 2 beats 1, ties itself: 1.5 / 4 = 0.375
    assert win_rates({"scores": [3, 1, 3, 2], "correct": [None, None, None, None]}) == [0.75, 0.125, 0.75, 0.375]
    # pairwise judge (llm round-robin, K = 3): wins 1.5 of 2 comparisons -> (1.5 + 0.5) / 3 = 2/3;
    # 0.5 of 2 -> 1/3; 1.0 of 2 -> 1/2; the three sum to K/2 as win rates of a round-robin must
    pairwise = {"scores": [0.75, 0.25, 0.5], "correct": [None] * 3,
                "details": [{"wins": w, "comparisons": 2} for w in (1.5, 0.5, 1.0)]}
    assert win_rates(pairwise) == pytest.approx([2 / 3, 1 / 3, 1 / 2])


def test_attach_win_rates_to_pairs_of_samples():
    from ratchet.data.pairing import attach_win_rates

    row = _row(["a", "b", "c"])
    judged = {"id": "p", "scores": [1.0, 0.0, 0.5]}
    pairs = build_pairs([row], [judged], strategy="best_vs_worst", max_pairs_per_prompt=1)
    # "a" beats b and c, ties itself: 2.5 / 3; "b" ties itself only: 0.5 / 3
    [p] = attach_win_rates(pairs, [row], [judged])
    assert (p["chosen"], p["rejected"]) == ("a", "b")
    assert (p["chosen_win_rate"], p["rejected_win_rate"]) == pytest.approx((2.5 / 3, 0.5 / 3))
    gold = {**pairs[0], "chosen": "Answer: 7"}  # not a sample of the prompt: no win rate
    with pytest.raises(Exception, match="chosen text is not one of the prompt's samples"):
        attach_win_rates([gold], [row], [judged])
