"""math-verify answers, from the main thread and from worker threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ratchet.judge.math import AnswerTimeout, MathJudge, answers_equal, call_with_deadline, extract_answer

CASES = [
    ("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$", True),
    ("42", "The answer is 42.", True),
    ("42", "The answer is $\\boxed{41}$", False),
    ("x^2+1", "$\\boxed{1 + x^2}$", True),
    ("3", "I first thought $3$, but it is $\\boxed{4}$", False),
    ("\\sqrt{2}", "$\\boxed{\\frac{2}{\\sqrt{2}}}$", True),
    ("5", "no answer here", False),
]


@pytest.mark.parametrize("gold, prediction, expected", CASES)
def test_answers_equal(gold, prediction, expected):
    assert answers_equal(gold, prediction) is expected


def test_safe_from_worker_threads():
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: answers_equal(c[0], c[1]), CASES * 3))
    assert got == [c[2] for c in CASES] * 3


def _spin():
    while True:
        pass


@pytest.mark.parametrize("on_main_thread", [True, False])
def test_deadline_interrupts_on_any_thread(on_main_thread):
    seen = {}

    def run():
        start = time.monotonic()
        try:
            call_with_deadline(_spin, 0.2)
        except AnswerTimeout:
            seen["after"] = time.monotonic() - start

    if on_main_thread:
        run()
    else:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(5)
    assert 0.15 < seen["after"] < 2.0


def test_deadline_does_not_fire_after_return():
    assert call_with_deadline(lambda: 7, 0.05) == 7
    time.sleep(0.2)  # a late timer must not raise here


def test_math_judge():
    out = MathJudge().judge({"id": "p", "answer": "\\frac{1}{2}"}, ["$\\boxed{1/2}$", "it is $\\boxed{2}$", "none"])
    assert [j.score for j in out] == [1.0, 0.0, 0.0]
    assert [j.correct for j in out] == [True, False, False]
    assert out[0].detail["extracted"] == "1/2" and out[2].detail["extracted"] is None


def test_math_judge_errors_and_unparseable_gold():
    with pytest.raises(KeyError, match="'p' has no 'answer' field"):
        MathJudge().judge({"id": "p"}, ["1"])
    [j] = MathJudge().judge({"answer": ""}, ["$\\boxed{1}$"])
    assert j.correct is None and "cannot parse" in j.detail["error"]


def test_extract_answer_prefers_the_boxed_answer():
    assert extract_answer("we get 3 and then $\\boxed{7}$ finally 9")[-1] == "7"
