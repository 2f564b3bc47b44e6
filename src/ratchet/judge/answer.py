"""The final-answer verifier for tasks with an integer answer (the built-in ``arithmetic`` task).

Extraction rule: the number after the last ``Answer:`` in the completion; if there is none, the
last number in the completion. Lenient on format on purpose: the task measures arithmetic, and a
model that gets the number right but forgets the line is still right. Math answers beyond integers
go through ``judge.math`` (math-verify).
"""

from __future__ import annotations

import re
from typing import Sequence

from ratchet.judge.base import JudgeInputError, Judgment

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_ANSWER_LINE = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\**\s*\$?(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def extract_answer(text: str) -> str | None:
    """The final answer of ``text`` as a normalised number string, or None if it holds no number."""
    marked = _ANSWER_LINE.findall(text)
    found = marked[-1] if marked else (_ANY_NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    found = found.replace(",", "")
    value = float(found)
    return str(int(value)) if value.is_integer() else str(value)


class AnswerJudge:
    """Scores 1.0 when the extracted final answer equals the prompt record's ``answer``."""

    metric = "accuracy"

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        if "answer" not in prompt:
            raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} has no 'answer' field; the answer judge needs one")
        gold = extract_answer(str(prompt["answer"]))
        if gold is None or not re.fullmatch(r"\s*\$?" + _NUMBER + r"\s*", str(prompt["answer"])):
            raise JudgeInputError(
                f"prompt {prompt.get('id', '?')!r}: answer {prompt['answer']!r} is not a number, and the answer judge "
                "compares numbers; use judge.name=exact for text answers or math for LaTeX and expressions")
        out = []
        for text in completions:
            got = extract_answer(text)
            ok = got is not None and got == gold
            out.append(Judgment(score=float(ok), correct=ok, detail={"extracted": got, "gold": gold}))
        return out
