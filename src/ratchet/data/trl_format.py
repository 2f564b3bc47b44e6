"""Preference pairs in TRL's dataset formats: read them as ratchet pairs rows, write ratchet pairs for TRL.

Owns the mapping between ratchet's pairs row (``records``: ``{"id", "messages", "chosen",
"rejected", ...}``, answers as plain strings) and TRL's preference formats
(https://huggingface.co/docs/trl/dataset_formats):

- standard, explicit prompt       ``{"prompt": str, "chosen": str, "rejected": str}``
- conversational, explicit prompt ``{"prompt": [messages], "chosen": [one assistant message], "rejected": [...]}``
- conversational, implicit prompt ``{"chosen": [messages], "rejected": [messages]}``: the shared
  leading messages are the prompt, the one assistant message after them the answer

Standard implicit-prompt rows (two strings sharing a prefix) are refused: where the prompt ends in a
string is a guess (TRL cuts at the first differing character). Ratchet's own rows pass unchanged.
Any other key (scores, ``complete`` flags) is kept both ways, so ratchet -> TRL -> ratchet is lossless.
A bad row is a ``RecordError`` naming the file and row, the key and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ratchet.data.records import RecordError, read_jsonl, write_jsonl

FORMATS = ("trl",)
"""What ``export_pairs`` writes."""
_ANSWER = "[{'role': 'assistant', 'content': str}]"


def from_trl(row: dict, where: str) -> dict:
    """One row of any accepted format as a ratchet pairs row; ``where`` (``file:row``) names it in errors."""
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:  # ratchet's own row (pairs or KTO's unpaired): the trainer validates it
        return row
    if "completion" in row:  # TRL's unpaired format: KTO reads ratchet's messages/completion/label rows
        raise RecordError(f"{where}: TRL unpaired rows (prompt/completion/label) are not converted; expected "
                          f"'messages'/'completion'/'label' for unpaired examples, or a preference pair")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise RecordError(f"{where}: missing key {key!r}; expected ratchet's 'messages'/'chosen'/'rejected' "
                              f"or TRL's 'prompt'/'chosen'/'rejected' (or 'chosen'/'rejected' conversations)")
    if "prompt" not in row:
        messages, chosen, rejected = _split_implicit(row, where)
    elif isinstance(row["prompt"], str):
        messages = [{"role": "user", "content": row["prompt"]}]
        chosen, rejected = (_text(row, key, where) for key in ("chosen", "rejected"))
    elif isinstance(row["prompt"], list):
        messages = _messages(row["prompt"], "prompt", where)
        chosen, rejected = (_answer(_messages(row[key], key, where), key, where) for key in ("chosen", "rejected"))
    else:
        raise RecordError(f"{where}: key 'prompt': expected a string or a list of {{role, content}} messages, "
                          f"got {type(row['prompt']).__name__}")
    rest = {k: v for k, v in row.items() if k not in ("id", "prompt", "chosen", "rejected")}
    return {"id": row.get("id") or _prompt_id(messages), "messages": messages, "chosen": chosen,
            "rejected": rejected, **rest}


def to_trl(row: dict, where: str = "row") -> dict:
    """A ratchet pairs row as TRL's conversational explicit-prompt row, other keys (id, scores) kept."""
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "completion" in row and "chosen" not in row:
        raise RecordError(f"{where}: an unpaired (KTO) row (messages/completion/label) is not a preference pair; "
                          f"only pairs rows can be exported")
    missing = [k for k in ("messages", "chosen", "rejected") if k not in row]
    if missing:
        raise RecordError(f"{where}: missing key(s) {missing}; expected a ratchet pairs row "
                          f"{{'messages', 'chosen', 'rejected'}}")
    messages = _messages(row["messages"], "messages", where)
    chosen, rejected = (_text(row, key, where) for key in ("chosen", "rejected"))
    rest = {k: v for k, v in row.items() if k not in ("messages", "chosen", "rejected")}
    return {**rest, "prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def read_pairs(path: str | Path) -> list[dict]:
    """Every row of a pairs JSONL file (ratchet's or any accepted TRL format) as a ratchet row."""
    return [from_trl(row, f"{path}:{n}") for n, row in enumerate(read_jsonl(path), start=1)]


def export_pairs(src: str | Path, out: str | Path, format: str = "trl") -> Path:
    """Write the pairs at ``src`` (any accepted format) to ``out`` in ``format``; return ``out``."""
    if format not in FORMATS:
        raise RecordError(f"export format {format!r} is not one of {list(FORMATS)}")
    rows = read_pairs(src)
    return write_jsonl(out, [to_trl(row, f"{src}:{n}") for n, row in enumerate(rows, start=1)])


# ------------------------------------------------------------------------------------ helpers
def _split_implicit(row: dict, where: str) -> tuple[list[dict], str, str]:
    """Prompt = the messages ``chosen`` and ``rejected`` share from the start (as ``trl.extract_prompt``)."""
    if isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
        raise RecordError(f"{where}: no 'messages' (ratchet) or 'prompt' (TRL) key, and 'chosen'/'rejected' are "
                          f"strings: TRL's standard implicit-prompt format is not accepted (where the prompt "
                          f"ends is a guess); add a 'prompt' key or give conversations")
    chosen, rejected = (_messages(row[key], key, where) for key in ("chosen", "rejected"))
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise RecordError(f"{where}: keys 'chosen'/'rejected' (implicit prompt): the conversations share no "
                          f"leading message, so there is no prompt; expected the same prompt messages in both")
    return chosen[:n], _answer(chosen[n:], "chosen", where), _answer(rejected[n:], "rejected", where)


def _messages(value, key: str, where: str) -> list[dict]:
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)
    if not ok:
        raise RecordError(f"{where}: key {key!r}: expected a non-empty list of {{'role': str, 'content': str}} "
                          f"messages, got {_short(value)}")
    return value


def _answer(messages: list[dict], key: str, where: str) -> str:
    """The text of exactly one assistant message: ratchet's pairs hold a single answer per side."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise RecordError(f"{where}: key {key!r}: expected exactly one assistant message after the prompt "
                          f"({_ANSWER}), got roles {roles}")
    return messages[0]["content"]


def _text(row: dict, key: str, where: str) -> str:
    if not isinstance(row[key], str):
        raise RecordError(f"{where}: key {key!r}: expected a string (the answer text), got {_short(row[key])}")
    return row[key]


def _prompt_id(messages: list[dict]) -> str:
    """Stable across runs and machines: rows of one prompt share an id, as ratchet's own pairs do."""
    return "trl-" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
