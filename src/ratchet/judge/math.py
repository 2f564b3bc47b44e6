"""Math answers: final-answer extraction and equivalence through math-verify, from any thread.

math-verify parses an answer (``\\boxed{}``, ``$...$``, or a plain expression) into SymPy and
compares it with the gold answer by several strategies (string, numeric within 6 decimals,
symbolic simplification, sets, intervals, matrices). The comparison is asymmetric on purpose:
gold first, prediction second (math-verify's FAQ).

Its own timeouts use ``signal.alarm``, which raises ``ValueError`` off the main thread
(math-verify issues #50, #55). So every call here runs with those timeouts off and under our
own deadline instead: a timer injects ``AnswerTimeout`` into the calling thread
(``PyThreadState_SetAsyncExc``). That is the guarantee ``signal.alarm`` gives, on any thread:
the exception arrives at the next Python bytecode, so a single long call into C is not cut
short. A timed-out comparison counts as not equal.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Callable, Sequence, TypeVar

from ratchet.judge.base import JudgeInputError, Judgment

T = TypeVar("T")


class AnswerTimeout(BaseException):
    """A BaseException, so math-verify's and SymPy's ``except Exception`` cannot swallow it and
    go on unbounded."""


def call_with_deadline(fn: Callable[[], T], seconds: float | None) -> T:
    """``fn()``, or ``AnswerTimeout`` raised inside it once ``seconds`` have passed."""
    if not seconds:
        return fn()
    thread_id, lock, state = threading.get_ident(), threading.Lock(), {"done": False, "fired": False}

    def fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(AnswerTimeout))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        return fn()
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # fired but perhaps not delivered yet: withdraw it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def _math_verify():
    try:
        import math_verify
        from math_verify import grader, parser
    except ImportError:
        raise ImportError("math answers need math-verify: pip install math-verify") from None
    # We always pass timeout=None and time out ourselves (see the module docstring), so its
    # one-time "timeout is disabled" warning would only mislead.
    parser.TIMEOUT_WARNING_SHOWN = grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify


@functools.lru_cache(maxsize=1)
def _prediction_config() -> tuple:
    mv = _math_verify()
    # As math-verify's README advises for rewards: a boxed answer wins over anything else in
    # the text, and units are stripped.
    latex = mv.LatexExtractionConfig(
        boxed_match_priority=0,
        normalization_config=mv.LatexNormalizationConfig(nits=False, malformed_operators=False, basic_latex=True,
                                                         boxed="all", units=True))
    return (latex, mv.ExprExtractionConfig())


def parse_gold(answer: str, timeout: float | None = 5.0) -> list:
    """math-verify's parse of a gold answer; bare LaTeX (``\\frac{1}{2}``) is read as math too.
    An empty list means unparseable."""
    mv = _math_verify()
    candidates = [answer] if "$" in answer or "\\boxed" in answer else [answer, f"${answer}$"]
    for text in candidates:
        try:
            parsed = call_with_deadline(lambda: mv.parse(text, parsing_timeout=None), timeout)
        except AnswerTimeout:
            parsed = []
        if parsed:
            return parsed
    return []


def extract_answer(text: str, timeout: float | None = 5.0) -> list:
    """math-verify's parse of a completion's final answer (empty: none found)."""
    mv = _math_verify()
    try:
        return call_with_deadline(lambda: mv.parse(text, list(_prediction_config()), parsing_timeout=None), timeout)
    except AnswerTimeout:
        return []


def answers_equal(gold: str | list, prediction: str | list, timeout: float | None = 5.0) -> bool:
    """True when the prediction's final answer equals the gold answer (strings are parsed)."""
    mv = _math_verify()
    gold = parse_gold(gold, timeout) if isinstance(gold, str) else gold
    prediction = extract_answer(prediction, timeout) if isinstance(prediction, str) else prediction
    if not gold or not prediction:
        return False
    try:
        return bool(call_with_deadline(lambda: mv.verify(gold, prediction, timeout_seconds=None), timeout))
    except AnswerTimeout:
        return False


def _shown(parsed: list) -> str | None:
    return None if not parsed else (parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0]))


class MathJudge:
    """Scores 1.0 when a completion's final answer equals the record's ``answer``, else 0.0.

    A gold answer math-verify cannot parse gives ``correct=None`` (no verdict) for every
    completion, with the reason in ``detail``; it is a data problem, not the model's."""

    metric = "accuracy"

    def __init__(self, answer_key: str = "answer", timeout: float | None = 5.0):
        self.answer_key, self.timeout = answer_key, timeout

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        if self.answer_key not in prompt:
            raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} has no {self.answer_key!r} field; "
                           "the math judge needs one")
        gold_text = str(prompt[self.answer_key])
        gold = parse_gold(gold_text, self.timeout)
        if not gold:
            detail = {"gold": gold_text, "error": "math-verify cannot parse the gold answer"}
            return [Judgment(score=0.0, correct=None, detail=dict(detail)) for _ in completions]
        out = []
        for text in completions:
            predicted = extract_answer(text, self.timeout)
            ok = answers_equal(gold, predicted, self.timeout) if predicted else False
            detail = {"extracted": _shown(predicted), "gold": _shown(gold)}
            out.append(Judgment(score=float(ok), correct=ok, detail=detail))
        return out
