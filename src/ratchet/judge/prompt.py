"""The parts of a prompt record (a row of prompts.jsonl, see ``data.records``) that judges read."""

from __future__ import annotations

from ratchet.judge.base import JudgeInputError

Messages = list[dict]


def prompt_messages(prompt: dict) -> Messages:
    """The record's chat messages; a clear error when they are missing or malformed."""
    messages = prompt.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} needs 'messages': a non-empty list of "
                       "{'role', 'content'} dicts")
    return messages


def question_text(prompt: dict) -> str:
    """The question as a judge is shown it: the single message, or the whole transcript."""
    messages = prompt_messages(prompt)
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in messages)
