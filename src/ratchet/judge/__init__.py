"""Judges score a prompt's completions behind the ``Judge`` protocol (see ``judge.base``).

``JUDGES`` maps the names a recipe may use (``judge.name``) to a factory of a judge.
"""

from ratchet.judge.answer import AnswerJudge

JUDGES = {
    "answer": AnswerJudge,
}
