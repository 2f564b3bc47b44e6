"""The ``Judge`` protocol: score a prompt's completions.

Judges output scores; they never decide what becomes a pair (that is ``data.pairing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ratchet.data.records import RecordError


class JudgeInputError(RecordError, KeyError):
    """A prompt row lacks what its judge reads (an ``answer``, ``messages``, code), or holds what it
    cannot read (a text answer for the number judge). A ``RecordError``, so the CLI prints one line
    naming the row and exits 2; a ``KeyError`` for callers that catch a missing field."""

    __str__ = Exception.__str__  # KeyError's would quote the message


@dataclass
class Judgment:
    """The verdict on one completion."""

    score: float
    """Higher is better. Verifiers give 1.0 (correct) or 0.0."""
    correct: bool | None = None
    """Ground-truth correctness where a verifier knows it; None for preference-only judges."""
    detail: dict = field(default_factory=dict)
    """Judge-specific evidence (extracted answer, failing test, judge's raw text)."""


class Judge(Protocol):
    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        """Judge the completions of one prompt record (a row of prompts.jsonl)."""
        ...
