"""Judges score a prompt's completions behind the ``Judge`` protocol (see ``judge.base``).

``JUDGES`` maps the names a recipe may use (``judge.name``, ``evaluate.judge``) to a factory of a
judge: a callable with no required argument (a class, or a function that builds the judge's
sandbox with its defaults).
"""

from ratchet.judge.answer import AnswerJudge
from ratchet.judge.code import unit_test_judge
from ratchet.judge.dstc import dstc_judge

JUDGES = {
    "answer": AnswerJudge,
    "unit_tests": unit_test_judge,
    "dstc": dstc_judge,
}
