"""The ``Task`` interface every task implements, and the prompt-row shape it produces.

A prompt row (a line of prompts.jsonl, see ``data.records``) is
``{"id", "task", "messages": [{"role", "content"}], "answer"?, "tests"?, ...extra fields}``.
"""

from __future__ import annotations

from typing import Protocol

from ratchet.data.records import RecordError

FIELDS = ("id", "prompt", "messages", "system", "answer", "tests")
"""ratchet's names for a row's parts, which ``task.fields`` maps a dataset's columns to: ``prompt``
(one user message) or ``messages`` (a chat, used as is), an optional ``system`` message, the
reference ``answer``, ``tests`` (for code judges) and an ``id``."""


class TaskError(RecordError):
    """A task's data cannot be read or does not fit (a missing column, an empty split); the message
    names the file and column. A ``RecordError``, so the CLI prints one line and exits 2."""


class Task(Protocol):
    name: str
    """The task's label, written into every row as ``task``."""
    stop: tuple[str, ...]
    """Stop strings that end an answer (kept in the text), besides the model's end of turn."""
    default_judge: str
    """The judge (``ratchet.judge.JUDGES``) used when the recipe names none."""

    def check(self) -> dict:
        """Read and validate the data now (before any model loads); returns counts for the log."""
        ...

    def heldout(self, n: int) -> list[dict]:
        """The first ``n`` held-out rows, the same for every round (fewer if the split is smaller)."""
        ...

    def train(self, n: int, round: int) -> list[dict]:
        """``n`` training rows for round ``round`` (1-based), disjoint from the held-out split."""
        ...

    def fingerprint(self) -> dict:
        """What identifies the data (a file's hash, a dataset's revision), for stage manifests:
        changed data invalidates the prompts stages instead of being mixed with old files."""
        ...
