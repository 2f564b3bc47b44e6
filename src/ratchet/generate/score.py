"""Scoring given completions with a model: log pi(y|x) of each, teacher-forced, no sampling.

The self-reward of SFT-sharpening (Huang et al. 2024, arXiv 2412.01951) is the model's own
sequence log-likelihood log pi_base(y|x) at temperature 1, whatever temperature or nucleus the
samples were drawn with, so it is computed here by one forward over prompt + completion rather
than recorded by the sampler. Sequences are tokenised exactly as the trainer tokenises them
(``data.tokenize``: chat-templated prompt, completion, end-of-turn token when the completion
ended by itself), and summed with ``logprobs.completion_logps``. Knows nothing of judging,
selection or training.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ratchet.data.tokenize import cached_prompt_ids, completion_ids
from ratchet.logprobs import completion_logps

Messages = list[dict[str, str]]


def _token_ids(tokenizer, items: Sequence[tuple[Messages, str, bool]]) -> list[tuple[list[int], list[int]]]:
    prompts: dict[str, list[int]] = {}
    return [(cached_prompt_ids(tokenizer, messages, prompts), completion_ids(tokenizer, text, complete))
            for messages, text, complete in items]


def _batches(seqs: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
    """Indices of the non-empty completions sorted by total length, longest first (ties in input
    order), cut every ``batch_size``: one forward each."""
    order = sorted((i for i in range(len(seqs)) if seqs[i][1]), key=lambda i: -sum(map(len, seqs[i])))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def logprob_batches(tokenizer, items: Sequence[tuple[Messages, str, bool]], batch_size: int) -> list[list[int]]:
    """The batches (indices into ``items``) ``sequence_logprobs`` computes, each in one forward:
    a sharded stage sends each whole to one worker, so each float is the local stage's."""
    return _batches(_token_ids(tokenizer, items), batch_size)


@torch.no_grad()
def sequence_logprobs(model, tokenizer, items: Sequence[tuple[Messages, str, bool]], *,
                      batch_size: int = 32) -> list[tuple[float, int]]:
    """(log pi(y|x), tokens scored) for each (prompt messages, completion text, ended by itself).

    Sorted by length and batched (right padding) so little compute goes to padding; results come
    back in input order. An empty completion scores 0.0 over 0 tokens."""
    seqs = _token_ids(tokenizer, items)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for idx in _batches(seqs, batch_size):
        width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        comp = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p, c = seqs[i]
            ids[row, :len(p) + len(c)] = torch.tensor(p + c)
            attn[row, :len(p) + len(c)] = 1
            comp[row, len(p):len(p) + len(c)] = 1
        logps = completion_logps(model, ids.to(device), attn.to(device), comp.to(device))
        for row, i in enumerate(idx):
            out[i] = (float(logps[row]), len(seqs[i][1]))
    model.train(was_training)
    return out
