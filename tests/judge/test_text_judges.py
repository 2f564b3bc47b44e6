"""Text verifiers (exact, regex, choice), a user's Python judge, and the judge registry's checks."""

from __future__ import annotations

import sys

import pytest

from ratchet.config import ConfigError
from ratchet.judge import build_judge, check_judge, judge_metric
from ratchet.judge.base import JudgeInputError
from ratchet.judge.text import ChoiceJudge, ExactJudge, RegexJudge, final_answer, normalise

ROW = {"id": "q1", "messages": [{"role": "user", "content": "Capital of France?"}], "answer": "Paris"}


def _verdicts(judge, row, texts):
    return [j.correct for j in judge.judge(row, texts)]


def test_final_answer_and_normalisation():
    assert final_answer("Let me think.\nAnswer: The Eiffel Tower.\n") == "The Eiffel Tower."
    assert final_answer("I think so.\nParis") == "Paris"
    assert final_answer("") == ""
    assert normalise("The  Eiffel-Tower!") == "eiffeltower"  # SQuAD: punctuation and articles go
    assert normalise("The Eiffel", case_sensitive=True) == "The Eiffel"


def test_exact_and_contains():
    exact = ExactJudge()
    assert _verdicts(exact, ROW, ["Answer: paris.", "Paris", "The capital is Paris.", "Answer: Lyon"]) == [
        True, True, False, False]
    contains = ExactJudge(match="contains")
    assert _verdicts(contains, ROW, ["The capital is Paris.", "Parisian food", "Answer: Lyon"]) == [True, False, False]
    several = {**ROW, "answer": ["NYC", "New York City"]}  # a list: any accepted answer
    assert _verdicts(exact, several, ["Answer: new york city", "Answer: nyc", "York"]) == [True, True, False]
    with pytest.raises(KeyError, match="task.fields.answer"):
        exact.judge({"id": "x"}, ["a"])


def test_regex_extracts_then_compares():
    judge = RegexJudge(pattern=r"capital is (\w+)")
    assert _verdicts(judge, ROW, ["The capital is Paris", "capital is Rome. no, capital is paris", "Paris"]) == [
        True, True, False]
    with pytest.raises(ValueError, match="group 2"):
        RegexJudge(pattern=r"(\w+)", group=2)
    with pytest.raises(ValueError, match="not a regular expression"):
        RegexJudge(pattern="(")


def test_choice_letter_and_index():
    judge = ChoiceJudge()
    row = {**ROW, "answer": "B"}
    texts = ["The answer is (B).", "Answer: C", "B) because", "I pick A, no wait, D", "no letter here"]
    assert _verdicts(judge, row, texts) == [True, False, True, False, False]
    assert _verdicts(judge, {**ROW, "answer": 1}, ["(B)"]) == [True]  # a 0-based index means a letter
    with pytest.raises(ValueError, match="choices"):
        ChoiceJudge(choices="ab")


def _module(tmp_path, monkeypatch, source: str, name: str = "my_judges"):
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def test_python_judge_from_a_module_on_the_path(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "def starts(row, completions, prefix='P'):\n"
                                   "    return [c.startswith(prefix) and row['answer'] in c for c in completions]\n"
                                   "def score(row, completions):\n    return [len(c) / 10 for c in completions]\n"
                                   "def broken(row, completions):\n    return [True]\n")
    judge = build_judge("python:my_judges:starts")
    verdicts = judge.judge(ROW, ["Paris", "It is Paris"])
    assert [v.correct for v in verdicts] == [True, False] and [v.score for v in verdicts] == [1.0, 0.0]
    assert [v.correct for v in build_judge("python:my_judges:starts", {"prefix": "It"}).judge(ROW, ["It is Paris"])] \
        == [True]
    scored = build_judge("python:my_judges:score").judge(ROW, ["abc", "abcdefghij"])
    assert [v.score for v in scored] == [0.3, 1.0] and [v.correct for v in scored] == [None, None]  # not 0/1: no verdict
    with pytest.raises(JudgeInputError, match="expected a list of 2 values"):
        build_judge("python:my_judges:broken").judge(ROW, ["a", "b"])
    check_judge("python:my_judges:starts", {"prefix": "x"})
    for name, params, match in (("python:my_judges:nope", {}, "has no function 'nope'"),
                                ("python:no_such_module:f", {}, "cannot import 'no_such_module'"),
                                ("python:my_judges", {}, "expected python:package.module:function"),
                                ("python:my_judges:starts", {"suffix": 1}, "has no parameter 'suffix'"),
                                ("python:my_judges:starts", {"prefix": 3}, "prefix: expected str")):
        with pytest.raises(ValueError, match=match):
            check_judge(name, params)


def test_registry_checks_params_and_declares_metrics():
    check_judge("exact", {"match": "contains"})
    check_judge("llm", {"mode": "pairwise", "model": "policy", "max_new_tokens": 32})
    for name, params, match in (("nope", {}, "unknown judge 'nope'"),
                                ("exact", {"match": "fuzzy"}, "match: expected one of"),
                                ("exact", {"case_sensitive": "yes"}, "expected bool"),
                                ("regex", {}, r"needs parameter\(s\) \['pattern'\]"),
                                ("reward_model", {}, "needs parameter"),
                                ("llm", {"policy": 1}, "has no parameter 'policy'"),
                                ("llm", {"temperature": float("nan")}, "finite"),
                                ("math", {"timeout": "soon"}, "timeout")):
        with pytest.raises(ValueError, match=match):
            check_judge(name, params)
    assert [judge_metric(n) for n in ("answer", "exact", "math", "unit_tests", "reward_model")] == [
        "accuracy", "accuracy", "accuracy", "accuracy", "mean_score"]
    assert judge_metric("llm", {"mode": "pairwise"}) == "win_rate" and judge_metric("llm") == "mean_score"
    with pytest.raises(ConfigError, match="needs the model"):
        build_judge("llm")  # model: policy, and no policy given


def test_the_number_judge_refuses_a_text_answer_instead_of_failing_everything():
    from ratchet.judge.answer import AnswerJudge

    assert [v.correct for v in AnswerJudge().judge({"answer": "1,234"}, ["Answer: 1234", "12"])] == [True, False]
    for gold in ("Paris", r"\frac{1}{2}"):
        with pytest.raises(JudgeInputError, match="is not a number.*judge.name=exact"):
            AnswerJudge().judge({"id": "r", "answer": gold}, ["Paris"])
