"""This example's judge: a user's own Python function, named in the recipe as
``judge.name: python:judge:named`` with this folder on PYTHONPATH.

ratchet calls ``named(row, completions)`` with the prompt row (``row["answer"]``, and the extra
column ``row["kind"]``) and returns one bool per completion: True when the reply names the answer,
and, for a continent, names no other continent ("Europe or Asia" is not an answer).
"""

import re
import unicodedata

CONTINENTS = ("africa", "asia", "europe", "north america", "south america", "oceania", "antarctica")


def _plain(text: str) -> str:
    """Lower case, no accents, punctuation as spaces: "Brasília." -> " brasilia "."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text).split()) + " "


def _final(reply: str) -> str:
    """What follows the last 'Answer:' if the reply has one, else the whole reply."""
    parts = re.split(r"answer\s*:", reply, flags=re.IGNORECASE)
    return parts[-1] if len(parts) > 1 else reply


def _names(text: str, name: str) -> bool:
    return f" {_plain(name).strip()} " in text


def named(row: dict, completions: list[str]) -> list[bool]:
    verdicts = []
    for reply in completions:
        text = _plain(_final(reply))
        ok = _names(text, row["answer"])
        if row.get("kind") == "continent":  # "South America" holds "america", so compare whole names
            ok = ok and [c for c in CONTINENTS if _names(text, c)] == [row["answer"].lower()]
        verdicts.append(ok)
    return verdicts
