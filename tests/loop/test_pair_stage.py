"""The pair stage (``stages.pair``) on hand-made completions and judgments: what each kind of
objective gets (KTO rows by the recipe's labeller, or split from DSTC's pairs; SPPO's win rates)
and which keys of ``pair.params`` reach the strategy, the labeller and the selection."""

import pytest

from ratchet.config import PairConfig
from ratchet.data.records import read_jsonl, write_jsonl

MSG = [{"role": "user", "content": "q"}]


def _stage(tmp_path, texts, judged: dict, cfg: PairConfig, loss: str, **row_extra) -> list[dict]:
    from ratchet.loop import stages

    row = {"id": "p", "messages": MSG, **row_extra,
           "completions": [{"text": t, "finish_reason": "stop"} for t in texts]}
    c = write_jsonl(tmp_path / "completions.jsonl", [row])
    j = write_jsonl(tmp_path / "judgments.jsonl", [{"id": "p", **judged}])
    return read_jsonl(stages.pair(c, j, tmp_path / "pairs.jsonl", cfg, loss=loss))


def test_kto_rows_by_the_recipes_labeller_and_threshold(tmp_path):
    judged = {"scores": [1.0, 0.6, 0.8], "correct": [False, False, False]}
    # labeller threshold 0.7: scores 1.0 and 0.8 desirable, 0.6 not (the verdicts are not read)
    cfg = PairConfig(labeller="threshold", params={"threshold": 0.7}, max_pairs_per_prompt=4)
    rows = _stage(tmp_path, ["a", "b", "c"], judged, cfg, "kto")
    assert {r["completion"]: r["label"] for r in rows} == {"a": True, "b": False, "c": True}
    # the default labeller: the verdicts, all incorrect
    rows = _stage(tmp_path, ["a", "b", "c"], judged, PairConfig(max_pairs_per_prompt=4), "kto")
    assert {r["label"] for r in rows} == {False} and len(rows) == 3


def test_each_consumer_gets_only_its_own_params(tmp_path):
    # one recipe's params: margin (score_margin) and threshold (the labeller); DPO's pairs read margin only
    cfg = PairConfig(strategy="score_margin", labeller="threshold", params={"margin": 0.5, "threshold": 0.9})
    pairs = _stage(tmp_path, ["a", "b", "c"], {"scores": [1.0, 0.6, 0.2]}, cfg, "dpo")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "c")]  # the one gap >= 0.5
    rows = _stage(tmp_path, ["a", "b", "c"], {"scores": [1.0, 0.6, 0.2]}, cfg, "kto")
    # threshold 0.9: only "a" desirable; the cap of 2 takes one of each class
    assert sorted((r["label"], r["completion"] == "a") for r in rows) == [(False, False), (True, True)]


DSTC_ROW = {"tests": ["assert f(1) == 1", "assert f(2) == 2"]}
# Pass matrix (self-written tests): A and B pass both, C passes t0 only. The real tests (`correct`)
# say the opposite: only C is right. DSTC's minimax: chosen code A (most passes, lowest index) with
# the strictest test it passes, t1 (2 passes < 3); rejected test t1 (most lenient that some code
# fails), rejected code C (fails t1).
DSTC_JUDGED = {"scores": [1.0, 1.0, 0.5], "correct": [False, False, True],
               "details": [{"passed": [True, True]}, {"passed": [True, True]}, {"passed": [True, False]}]}


def test_kto_with_dstc_labels_by_the_self_written_tests_only(tmp_path):
    cfg = PairConfig(strategy="dstc", max_pairs_per_prompt=1)
    rows = _stage(tmp_path, ["A", "B", "C"], DSTC_JUDGED, cfg, "kto", **DSTC_ROW)
    assert [(r["completion"], r["label"]) for r in rows] == [("A\n\nassert f(2) == 2", True),
                                                             ("C\n\nassert f(2) == 2", False)]
    # any other strategy would label by `correct`, the real tests: refused
    with pytest.raises(ValueError, match="KTO rows from self-written tests need pair.strategy: dstc"):
        _stage(tmp_path, ["A", "B", "C"], DSTC_JUDGED, PairConfig(), "kto", **DSTC_ROW)


def test_sppo_pairs_carry_each_samples_win_rate(tmp_path):
    # scores [0.2, 0.9, 0.5] (no verdicts): best_vs_worst pairs b (0.9) with a (0.2).
    # K = 3, self-comparison included: b beats a and c, ties itself: 2.5 / 3; a ties itself: 0.5 / 3
    cfg = PairConfig(strategy="best_vs_worst")
    [p] = _stage(tmp_path, ["a", "b", "c"], {"scores": [0.2, 0.9, 0.5]}, cfg, "sppo")
    assert (p["chosen"], p["rejected"]) == ("b", "a")
    assert (p["chosen_win_rate"], p["rejected_win_rate"]) == pytest.approx((2.5 / 3, 0.5 / 3))
    # a pairwise llm judge's round-robin (both orders combined): b won 2 of 2, a 0.5 of 2, c 0.5 of 2:
    # (2 + 0.5) / 3 and (0.5 + 0.5) / 3
    judged = {"scores": [0.25, 1.0, 0.25], "correct": [None] * 3,
              "details": [{"wins": w, "comparisons": 2} for w in (0.5, 2.0, 0.5)]}
    [p] = _stage(tmp_path, ["a", "b", "c"], judged, cfg, "sppo")
    assert p["chosen"] == "b" and (p["chosen_win_rate"], p["rejected_win_rate"]) == pytest.approx((2.5 / 3, 1 / 3))
