"""SFT selections on hand-made rows: which samples are kept, caps, ties, prompts with nothing correct."""

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.data.selection import SELECTIONS, attach_logprobs, build_sft


def _row(texts, pid="p", reasons=None, logprobs=None, tokens=None):
    comps = [{"text": t, "finish_reason": (reasons or ["eos"] * len(texts))[i]} for i, t in enumerate(texts)]
    for i, c in enumerate(comps):
        if logprobs is not None:
            c["logprob"] = logprobs[i]
            c["logprob_tokens"] = (tokens or [1] * len(texts))[i]
    return {"id": pid, "messages": [{"role": "user", "content": f"q {pid}"}], "completions": comps}


def _judged(scores, pid="p", correct=None):
    return {"id": pid, "scores": scores, **({"correct": correct} if correct is not None else {})}


def _sft(rows, judged, selection, cap=10, seed=0, **params):
    return build_sft(rows, judged, selection=selection, max_per_prompt=cap, seed=seed, **params)


def test_all_correct_keeps_every_distinct_correct_sample():
    # correct: "a", "c", "a" again (duplicate text) and "d"; "b" is wrong, "e" unknown (None)
    row = _row(["a", "b", "c", "a", "d", "e"], reasons=["eos", "eos", "length", "eos", "stop", "eos"])
    judged = _judged([1, 0, 1, 1, 1, 0], correct=[True, False, True, True, True, None])
    out = _sft([row], [judged], "all_correct")
    assert [r["completion"] for r in out] == ["a", "c", "d"]  # sample order, one "a"
    assert all(r["label"] is True and r["selection"] == "all_correct" and r["correct"] for r in out)
    assert [r["complete"] for r in out] == [True, False, True]  # "c" was cut by max_new_tokens
    assert set(out[0]) == {"id", "messages", "completion", "label", "complete", "score", "correct", "selection"}


def test_all_correct_cap_draws_a_seeded_subset_in_sample_order():
    row = _row(["a", "b", "c", "d", "e"])
    judged = _judged([1, 1, 1, 1, 1])
    picks = {tuple(r["completion"] for r in _sft([row], [judged], "all_correct", cap=2, seed=s)) for s in range(20)}
    assert all(len(p) == 2 and list(p) == sorted(p) for p in picks)
    assert len(picks) > 1  # the seed decides which two
    assert _sft([row], [judged], "all_correct", cap=2, seed=3) == _sft([row], [judged], "all_correct", cap=2, seed=3)
    assert _sft([row], [judged], "all_correct", cap=0) == []


def test_all_correct_prompt_with_nothing_correct_gives_no_rows():
    rows = [_row(["x", "y"], pid="hard"), _row(["ok", "no"], pid="easy")]
    judged = [_judged([0, 0], pid="hard"), _judged([1, 0], pid="easy")]
    out = _sft(rows, judged, "all_correct")
    assert [(r["id"], r["completion"]) for r in out] == [("easy", "ok")]
    # scores without a correct list: correct means score > 0.5
    assert [r["completion"] for r in _sft([_row(["a", "b"])], [_judged([0.9, 0.2])], "all_correct")] == ["a"]


def test_best_of_n_picks_the_top_score_and_breaks_ties_by_seed():
    row = _row(["a", "b", "c"])
    out = _sft([row], [_judged([0.2, 0.9, 0.5])], "best_of_n")
    assert [(r["completion"], r["score"]) for r in out] == [("b", 0.9)]
    tied = _judged([0.9, 0.1, 0.9])
    winners = {_sft([row], [tied], "best_of_n", seed=s)[0]["completion"] for s in range(20)}
    assert winners == {"a", "c"}  # never the lower one; which of the tied two depends on the seed
    assert _sft([row], [tied], "best_of_n", seed=5) == _sft([row], [tied], "best_of_n", seed=5)


def test_best_of_n_min_score_drops_prompts_whose_best_is_too_low():
    rows = [_row(["x", "y"], pid="hard"), _row(["ok", "no"], pid="easy")]
    judged = [_judged([0, 0], pid="hard"), _judged([1, 0], pid="easy")]
    assert [r["id"] for r in _sft(rows, judged, "best_of_n")] == ["hard", "easy"]  # pure best-of-N keeps both
    assert [r["id"] for r in _sft(rows, judged, "best_of_n", min_score=1.0)] == ["easy"]


def test_self_loglik_picks_the_most_likely_sample_and_ignores_the_judge():
    # sequence log-likelihoods -3, -1, -2: "b"; the judge (which prefers "a") is not read
    row = _row(["a", "b", "c"], logprobs=[-3.0, -1.0, -2.0], tokens=[1, 4, 1])
    out = _sft([row], [_judged([1, 0, 0])], "self_loglik")
    assert [(r["completion"], r["logprob"], r["logprob_tokens"], r["correct"]) for r in out] == [("b", -1.0, 4, False)]
    # length-normalised: -3/1, -1/4, -2/1 -> still "b"; with 1 token for "b" and 4 for "c": -3, -1, -0.5 -> "c"
    row = _row(["a", "b", "c"], logprobs=[-3.0, -1.0, -2.0], tokens=[1, 1, 4])
    assert _sft([row], [_judged([0, 0, 0])], "self_loglik", length_normalized=True)[0]["completion"] == "c"
    assert _sft([row], [_judged([0, 0, 0])], "self_loglik")[0]["completion"] == "b"


def test_self_loglik_ties_by_seed_and_needs_logprobs():
    row = _row(["a", "b", "c"], logprobs=[-1.0, -5.0, -1.0])
    winners = {_sft([row], [_judged([0, 0, 0])], "self_loglik", seed=s)[0]["completion"] for s in range(20)}
    assert winners == {"a", "c"}
    with pytest.raises(ValueError, match=r"self_loglik: prompt 'p': completion\(s\) \[0, 1\] have no 'logprob'"):
        _sft([_row(["a", "b"])], [_judged([0, 0])], "self_loglik")


def test_attach_logprobs_matches_rows_by_id_and_checks_counts():
    rows = [_row(["a", "b"], pid="p"), _row(["c"], pid="q")]
    scores = [{"id": "q", "logprobs": [-2.0], "num_tokens": [3]}, {"id": "p", "logprobs": [-1.0, -4.0],
                                                                  "num_tokens": [2, 5]}]
    out = attach_logprobs(rows, scores)
    assert [c["logprob"] for c in out[0]["completions"]] == [-1.0, -4.0]
    assert out[1]["completions"][0]["logprob_tokens"] == 3
    assert "logprob" not in rows[0]["completions"][0]  # the input is not modified
    with pytest.raises(ValueError, match="2 completions but 1 self-scores"):
        attach_logprobs(rows[:1], [{"id": "p", "logprobs": [-1.0], "num_tokens": [1]}])
    with pytest.raises(ValueError, match=r"row 1 \(id 'p'\) has no self-score row"):
        attach_logprobs(rows[:1], [])


def test_unknown_selection_and_parameter_are_errors():
    row, judged = _row(["a"]), _judged([1])
    with pytest.raises(ValueError, match=r"unknown SFT selection 'best'; expected one of \['all_correct'"):
        _sft([row], [judged], "best")
    with pytest.raises(ValueError, match=r"SFT selection 'best_of_n' has no parameter 'margin'; its parameters: "
                                         r"\['min_score'\]"):
        _sft([row], [judged], "best_of_n", margin=1)
    with pytest.raises(ConfigError, match="pair.selection: unknown SFT selection 'allcorrect'"):
        load_config(None, ["pair.selection=allcorrect"])
    assert {name for name, s in SELECTIONS.items() if s.self_scored} == {"self_loglik"}
