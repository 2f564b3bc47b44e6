"""The token ids that end a completion: one set, the same in every sampler.

A model's turn may end with a token other than ``tokenizer.eos_token_id``: its
``generation_config.eos_token_id`` can list several (Qwen2.5-Instruct: <|im_end|> and
<|endoftext|>), and its chat template may close an assistant turn with a token of its own
(Llama 3's <|eot_id|>, Gemma's <end_of_turn>). A sampler stopping on EOS alone would run such a
model to ``max_new_tokens`` every time, and the loop would drop every sample as truncated.
"""

from __future__ import annotations

from ratchet.data.chat import end_of_turn_token

__all__ = ["end_of_turn_token", "model_eos_ids", "stop_token_ids"]


def model_eos_ids(model) -> list[int]:
    """``generation_config.eos_token_id`` (an int or a list) of ``model``, or of ``model`` itself
    when it is a ``GenerationConfig``; [] when there is none. A PEFT wrapper passes the attribute
    lookup through to its base model."""
    config = getattr(model, "generation_config", model)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def stop_token_ids(tokenizer, model=None) -> tuple[int, ...]:
    """Sorted ids that end a completion: the tokenizer's EOS, the model's generation-config EOS
    ids and the chat template's end-of-turn token."""
    ids = {tokenizer.eos_token_id, end_of_turn_token(tokenizer), *model_eos_ids(model)}
    return tuple(sorted(i for i in ids if i is not None))
