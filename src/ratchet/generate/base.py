"""The ``Sampler`` protocol: chat prompts in, k completions per prompt out.

Every sampler (transformers' ``generate``, the cached engine, vLLM) implements this one protocol,
so the rest of ratchet never knows which one ran, and encodes its prompts with ``encode_prompts``,
so a prompt too long for the model's context is refused the same way by all three. Samplers know
nothing of judging or training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ratchet.data.records import RecordError
from ratchet.data.tokenize import prompt_ids

Messages = list[dict[str, str]]  # [{"role": "user", "content": "..."}], as in chat templates


class PromptTooLongError(RecordError):
    """A prompt that leaves no room for ``max_new_tokens`` in the model's context: an input row that
    does not fit, raised before anything is sampled (a ``RecordError``: the CLI prints one line).
    ``index``: the prompt's position in the batch."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


def preview(messages: Messages, width: int = 60) -> str:
    """The start of a prompt's text, to name it in errors."""
    text = " ".join(m.get("content", "") for m in messages).replace("\n", " ")
    return text[:width] + ("..." if len(text) > width else "")


def encode_prompts(tokenizer, prompts: Sequence[Messages], max_new_tokens: int,
                   max_context: int | None) -> list[list[int]]:
    """Each prompt's token ids (``data.tokenize.prompt_ids``). Raises ``PromptTooLongError`` for the
    first prompt that leaves no room for ``max_new_tokens`` within ``max_context`` tokens (None or 0:
    no limit is known), before anything is sampled."""
    encoded = []
    for i, messages in enumerate(prompts):
        ids = prompt_ids(tokenizer, messages)
        if max_context and len(ids) + max_new_tokens > max_context:
            raise PromptTooLongError(f"prompt {i} ({preview(messages)!r}) is {len(ids)} tokens; with max_new_tokens="
                                     f"{max_new_tokens} it exceeds the model's context of {max_context} tokens", i)
        encoded.append(ids)
    return encoded


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Recorded verbatim in every completions file."""

    k: int = 1
    """Completions per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding (then k must be 1)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    max_new_tokens: int = 128
    """Hard cap on generated tokens per completion."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion; the stop string is kept in the text."""
    seed: int = 0
    """Seed for the sampler's random generator: same seed, same completions."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.k > 1:
            raise ValueError("greedy decoding (temperature 0) gives k identical completions; use k=1")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Sample:
    """One completion of one prompt."""

    text: str
    num_tokens: int
    """Generated tokens kept (after cutting at a stop string)."""
    finish_reason: str
    """"stop" (stop string), "eos" (end-of-sequence token) or "length" (max_new_tokens)."""
    extra: dict = field(default_factory=dict)


class Sampler(Protocol):
    def sample(self, prompts: Sequence[Messages], params: SamplingParams) -> list[list[Sample]]:
        """Return, for each prompt in order, ``params.k`` samples."""
        ...
