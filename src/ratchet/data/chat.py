"""Chat formatting: how messages become prompt text, and which token closes an assistant turn.

Knows a tokenizer, never a model. A tokenizer with a chat template renders prompts with it; one
without (a base model) gets a plain "User: ...\\n\\nAssistant:" format, announced by one warning
per process. ``end_of_turn_token`` reads the template itself to find the token it writes right
after an assistant message: samplers stop on it, and training appends it to a finished completion.
"""

from __future__ import annotations

import warnings
import weakref

Messages = list[dict[str, str]]

_PROBE = "ratchet-end-of-turn-probe"  # assistant content to find in the rendered conversation
_end_of_turn_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_warned_plain_format = False


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, messages: Messages) -> str:
    """The prompt text up to the assistant turn's header: the chat template's, else the plain format."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    _warn_plain_format()
    turns = "".join(f"{m.get('role', 'user').capitalize()}: {m['content']}\n\n" for m in messages)
    # The template would have written BOS; base models such as Llama and Gemma degrade without it.
    return (tokenizer.bos_token or "") + turns + "Assistant:"


def _warn_plain_format() -> None:
    global _warned_plain_format
    if not _warned_plain_format:
        _warned_plain_format = True
        warnings.warn("the tokenizer has no chat template: prompts are rendered as plain 'User: ...' / "
                      "'Assistant:' turns (fine for a base model; an instruct model wants its own template)",
                      stacklevel=3)


def end_of_turn_token(tokenizer) -> int | None:
    """The id of the special token the chat template writes right after an assistant message's
    content (<|im_end|>, <|eot_id|>, <end_of_turn>), or None: no template, or no special token there.

    Cached per tokenizer and template: training calls this once per completion."""
    template = getattr(tokenizer, "chat_template", None)
    cached = _end_of_turn_cache.get(tokenizer)
    if cached is None or cached[0] != template:
        cached = (template, _find_end_of_turn(tokenizer) if template else None)
        _end_of_turn_cache[tokenizer] = cached
    return cached[1]


def closing_token(tokenizer) -> int | None:
    """The token a completion that ended by itself closes with: the end of turn, else EOS."""
    end = end_of_turn_token(tokenizer)
    return tokenizer.eos_token_id if end is None else end


def _find_end_of_turn(tokenizer) -> int | None:
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse this conversation; then it names no token
        return None
    # Some templates put a space before the token (Llama 2: "content </s>").
    after = text.rpartition(_PROBE)[2].lstrip()
    token = max((t for t in special_tokens(tokenizer) if t and after.startswith(t)), key=len, default=None)
    return None if token is None else tokenizer.convert_tokens_to_ids(token)


def special_tokens(tokenizer) -> set[str]:
    """The tokenizer's special tokens, with added tokens marked special (Llama 3 lists <|eot_id|>
    only there)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    return set(tokenizer.all_special_tokens) | {t.content for t in added if t.special}
