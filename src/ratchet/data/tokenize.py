"""Tokenisation: chat template for the prompt, completion tokens after it, prompt masked.

Knows a tokenizer, never a model. A sequence is ``prompt_ids + completion_ids``; only completion
tokens are scored (``completion_mask``). A completion that ended by itself gets the token that
ends an assistant turn in the chat template appended (``data.chat.end_of_turn_token``, else EOS),
so the model learns to stop as the samplers stop; one cut by ``max_new_tokens`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratchet.data.chat import closing_token, render_prompt


@dataclass
class Tokenized:
    input_ids: list[int]
    completion_mask: list[int]
    """1 where the token is a completion token (scored), 0 for prompt tokens."""
    truncated: bool
    """True if the completion was cut to fit ``max_length``."""

    @property
    def num_completion_tokens(self) -> int:
        return sum(self.completion_mask)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant turn's header
    (``data.chat.render_prompt``: the plain format when the tokenizer has no chat template)."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


def cached_prompt_ids(tokenizer, messages: list[dict], cache: dict[str, list[int]]) -> list[int]:
    """``prompt_ids`` of ``messages``, templated once per distinct prompt: ``cache`` (a dict the
    caller keeps for one batch of sequences) holds them by the messages' ``repr``. Several
    sequences share a prompt (k samples, chosen and rejected), and templating is a Jinja render."""
    key = repr(messages)
    if key not in cache:
        cache[key] = prompt_ids(tokenizer, messages)
    return cache[key]


def completion_ids(tokenizer, text: str, complete: bool = True) -> list[int]:
    """Token ids of ``text``, plus the end-of-turn token (else EOS) when it ended by itself."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    end = closing_token(tokenizer) if complete else None
    return ids if end is None else ids + [end]


def tokenize_completion(tokenizer, prompt: list[int], text: str, *, complete: bool, max_length: int) -> Tokenized:
    """``prompt`` ids (already templated) + ``text``, truncated on the completion side to ``max_length``.

    Raises ValueError when the prompt leaves no room for a completion token."""
    comp = completion_ids(tokenizer, text, complete)
    room = max_length - len(prompt)
    if room < 1:
        raise ValueError(f"prompt is {len(prompt)} tokens, leaving no room for the completion within "
                         f"max_length={max_length}")
    if not comp:
        raise ValueError("empty completion")
    truncated = len(comp) > room
    comp = comp[:room]
    return Tokenized(prompt + comp, [0] * len(prompt) + [1] * len(comp), truncated)
