"""Reward-model judge: any ``AutoModelForSequenceClassification`` checkpoint, batched.

A completion's score is one logit of the classifier on the whole conversation (prompt messages
plus the completion as the assistant's turn): the only logit of a one-label head, as trained by
TRL's RewardTrainer, or the logit of ``label`` for a multi-label one. The conversation is
rendered with the tokenizer's chat template when it has one, else as ``role: content`` lines.
Long conversations lose tokens from the left, so the completion, which the score is about, is
always kept. Knows nothing about sampling or pairing. A model trained by ``ratchet train-rm``
(``train.reward_model``: Bradley-Terry on preference pairs) is such a checkpoint: its output
``<out>/model`` is the judge's ``model`` param, and it was trained on conversations rendered by
``render_ids`` here, as the judge renders them.
"""

from __future__ import annotations

from typing import Sequence

from ratchet.judge.base import Judgment
from ratchet.judge.prompt import Messages, prompt_messages


class RewardModelJudge:
    """Scores completions with a sequence-classification model; ``correct`` is always None."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int = 2048, label: int = 0):
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        num_labels = getattr(model.config, "num_labels", 1)
        if not 0 <= label < num_labels:
            raise ValueError(f"label {label} is out of range for a model with {num_labels} label(s)")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length, self.label = batch_size, max_length, label
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        if model.config.pad_token_id is None:
            # Sequence classifiers score the last non-pad token, found through this id; without
            # it transformers refuses batches larger than one.
            model.config.pad_token_id = self.pad_id

    @classmethod
    def from_pretrained(cls, path: str, device: str = "auto", dtype: str = "auto", **kwargs) -> RewardModelJudge:
        """``device`` / ``dtype`` as a recipe's ``model`` takes them (``auto``: the GPU in bf16 if any)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ratchet.models import pick_device, pick_dtype

        device = pick_device(device)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=pick_dtype(dtype, device))
        return cls(model.to(device), AutoTokenizer.from_pretrained(path), **kwargs)

    def render(self, messages: Messages) -> list[int]:
        """Token ids of one conversation, cut from the left to ``max_length``."""
        return render_ids(self.tokenizer, messages, self.max_length)

    def score(self, conversations: Sequence[Messages]) -> list[float]:
        """One score per conversation, in order; batches hold similar lengths to pad little."""
        import torch

        encoded = [self.render(c) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        device = next(self.model.parameters()).device
        scores = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            ids, mask = pad_right([encoded[i] for i in batch], self.pad_id)
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, labels)
            for row, i in enumerate(batch):
                scores[i] = float(logits[row, self.label])
        return scores

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        messages = prompt_messages(prompt)
        scores = self.score([messages + [{"role": "assistant", "content": c}] for c in completions])
        return [Judgment(score=s, correct=None, detail={"reward": s}) for s in scores]


def render_ids(tokenizer, messages: Messages, max_length: int) -> list[int]:
    """Token ids of one conversation as the judge scores it (and ``train.reward_model`` trains it):
    the chat template when the tokenizer has one, else ``role: content`` lines; cut from the left
    to ``max_length`` so the completion, which the score is about, is kept."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in messages)
        ids = tokenizer(text)["input_ids"]
    return ids[-max_length:]


def pad_right(encoded: Sequence[list[int]], pad_id: int):
    """(input_ids, attention_mask) long tensors of the sequences, right-padded with ``pad_id``; the
    classifier reads the last non-pad token (``config.pad_token_id``)."""
    import torch

    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, :len(e)] = torch.tensor(e, dtype=torch.long)
        mask[row, :len(e)] = 1
    return ids, mask
