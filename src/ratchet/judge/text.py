"""Verifiers for text answers: ``exact`` (normalised string match), ``regex`` (extract with a
pattern, then match) and ``choice`` (a multiple-choice letter).

Each compares a completion's final answer with the row's reference (``answer_key``, default
``answer``; a list of strings means any of them is right). The final answer of a completion is what
follows its last ``Answer:`` (the instruction ratchet's tasks give), else its last non-empty line.
Normalisation is SQuAD's (Rajpurkar et al. 2016, the official evaluation script): lower case, no
punctuation, no articles, single spaces, so "The Eiffel Tower." matches "eiffel tower".
"""

from __future__ import annotations

import re
import string
from typing import Sequence

from ratchet.judge.base import JudgeInputError, Judgment

_ANSWER = re.compile(r"(?:final\s+)?answer\s*(?:is)?\s*[:=]\s*(.*)", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def final_answer(text: str) -> str:
    """What follows the last ``Answer:`` in ``text`` (to the end of its line), else its last line."""
    marked = [m.group(1).strip() for line in text.splitlines() if (m := _ANSWER.search(line))]
    marked = [m for m in marked if m]
    if marked:
        return marked[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalise(text: str, case_sensitive: bool = False) -> str:
    """SQuAD's answer normalisation (optionally keeping case)."""
    text = text if case_sensitive else text.lower()
    text = _ARTICLES.sub(" ", text.translate(_PUNCT)) if not case_sensitive else text.translate(_PUNCT)
    return " ".join(text.split())


def gold_answers(prompt: dict, key: str) -> list[str]:
    """The row's reference answers: one string, or a list of acceptable ones."""
    if key not in prompt or prompt[key] is None:
        raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} has no {key!r} field; this judge compares with it "
                       "(map your column with task.fields.answer)")
    gold = prompt[key]
    return [str(g) for g in gold] if isinstance(gold, list) else [str(gold)]


class ExactJudge:
    """1.0 when the normalised final answer equals a normalised reference (``match: exact``), or
    holds one as whole words (``match: contains``: "The capital is Paris" holds "Paris")."""

    metric = "accuracy"

    def __init__(self, answer_key: str = "answer", match: str = "exact", case_sensitive: bool = False):
        if match not in ("exact", "contains"):
            raise ValueError(f"match: expected 'exact' or 'contains', got {match!r}")
        self.answer_key, self.match, self.case_sensitive = answer_key, match, case_sensitive

    def matches(self, got: str, gold: list[str]) -> bool:
        got = normalise(got, self.case_sensitive)
        golds = [normalise(g, self.case_sensitive) for g in gold]
        if self.match == "contains":
            return any(g and f" {g} " in f" {got} " for g in golds)
        return got in golds

    def extract(self, text: str) -> str | None:
        return final_answer(text)

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        gold = gold_answers(prompt, self.answer_key)
        out = []
        for text in completions:
            got = self.extract(text)
            ok = got is not None and self.matches(got, gold)
            out.append(Judgment(score=float(ok), correct=ok, detail={"extracted": got, "gold": gold}))
        return out


class RegexJudge(ExactJudge):
    """The last match of ``pattern`` in the completion (its group ``group``; 0 = the whole match),
    compared with the reference as ``exact`` does; no match is wrong."""

    def __init__(self, pattern: str, group: int = 1, answer_key: str = "answer", match: str = "exact",
                 case_sensitive: bool = False):
        super().__init__(answer_key, match, case_sensitive)
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
        except re.error as e:
            raise ValueError(f"pattern {pattern!r} is not a regular expression: {e}") from None
        if not 0 <= group <= self.pattern.groups:
            raise ValueError(f"group {group}: the pattern has {self.pattern.groups} group(s)")
        self.group = group

    def extract(self, text: str) -> str | None:
        found = list(self.pattern.finditer(text))
        return found[-1].group(self.group) if found else None


class ChoiceJudge(ExactJudge):
    """Multiple choice: the letter the completion picks (``Answer: B``, ``(B)``, ``B)``, ``B.`` at
    the start of a line, else the last standalone letter among ``choices``) against the reference
    letter (or its 0-based index)."""

    def __init__(self, choices: str = "ABCD", answer_key: str = "answer"):
        super().__init__(answer_key, "exact", case_sensitive=True)
        if not choices.isalpha() or not choices.isupper() or len(set(choices)) != len(choices):
            raise ValueError(f"choices: expected distinct upper-case letters, got {choices!r}")
        c = f"[{choices}]"
        self.choices = choices
        self.patterns = [re.compile(rf"(?i:answer)\s*(?:is)?\s*[:=]?\s*\**\(?({c})\b"),
                         re.compile(rf"\(({c})\)"), re.compile(rf"^\s*\**({c})[).:]", re.MULTILINE),
                         re.compile(rf"\b({c})\b")]

    def extract(self, text: str) -> str | None:
        for pattern in self.patterns:  # most explicit first
            found = pattern.findall(text)
            if found:
                return found[-1]
        return None

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        gold = [self.choices[int(g)] if g.isdigit() and int(g) < len(self.choices) else g.strip().upper()
                for g in gold_answers(prompt, self.answer_key)]
        return super().judge({**prompt, self.answer_key: gold}, completions)
