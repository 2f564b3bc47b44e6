"""Pairs file rows -> tokenised, validated examples -> length-grouped batches with named fields.

Validation names the row: a missing field, an empty completion, or a prompt that leaves no room
for the completion within ``max_length`` is a ``PairsError`` (or skipped and counted with
``skip_invalid``). Truncated completions are counted, never silent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ratchet.data.tokenize import Tokenized, prompt_ids, tokenize_completion

PAIR_FIELDS = ("messages", "chosen", "rejected")


class PairsError(ValueError):
    pass


@dataclass
class PairExample:
    row: int
    """1-based row number in the pairs file (for error messages)."""
    chosen: Tokenized
    rejected: Tokenized

    @property
    def length(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


@dataclass
class PrepareReport:
    examples: list[PairExample]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(row, reason) of every invalid row that was skipped."""
    truncated: int = 0
    """Completions cut to fit max_length."""


def _problem(row: dict) -> str | None:
    missing = [k for k in PAIR_FIELDS if k not in row]
    if missing:
        return f"missing field(s) {missing}"
    for key in ("chosen", "rejected"):
        if not isinstance(row[key], str) or not row[key].strip():
            return f"empty {key} completion"
    if not isinstance(row["messages"], list) or not row["messages"]:
        return "messages must be a non-empty list of {role, content}"
    return None


def prepare_pairs(rows: list[dict], tokenizer, *, max_length: int, skip_invalid: bool = False) -> PrepareReport:
    report = PrepareReport(examples=[])
    for n, row in enumerate(rows, start=1):
        try:
            problem = _problem(row)
            if problem:
                raise ValueError(problem)
            prompt = prompt_ids(tokenizer, row["messages"])
            chosen = tokenize_completion(tokenizer, prompt, row["chosen"], complete=row.get("chosen_complete", True),
                                         max_length=max_length)
            rejected = tokenize_completion(tokenizer, prompt, row["rejected"],
                                           complete=row.get("rejected_complete", True), max_length=max_length)
        except ValueError as e:
            if not skip_invalid:
                raise PairsError(f"pairs row {n}: {e} (use --skip-invalid to skip such rows)") from None
            report.skipped.append((n, str(e)))
            continue
        report.truncated += chosen.truncated + rejected.truncated
        report.examples.append(PairExample(n, chosen, rejected))
    return report


def length_grouped_batches(examples: list[PairExample], batch_size: int, *, seed: int) -> list[list[int]]:
    """Indices in batches of similar length (little padding), batch order shuffled by ``seed``.

    Sort a shuffled order by length inside windows of 50 batches (TRL/HF "group_by_length"
    style): padding stays low while every epoch still sees different batch compositions."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 50
    grouped = []
    for s in range(0, len(order), window):
        grouped += sorted(order[s:s + window], key=lambda i: examples[i].length, reverse=True)
    batches = [grouped[s:s + batch_size] for s in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class SequenceBatch:
    """Right-padded sequences: input_ids, attention_mask, completion_mask, all [N, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def collate(seqs: list[Tokenized], pad_id: int) -> SequenceBatch:
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        attn[i, :n] = 1
        comp[i, :n] = torch.tensor(s.completion_mask)
    return SequenceBatch(ids, attn, comp)


def collate_pairs(examples: list[PairExample], pad_id: int) -> SequenceBatch:
    """Chosen then rejected in one batch of 2B sequences, so both go through one forward.

    Row i is the chosen of pair i and row B + i its rejected; ``train.step`` splits them back
    into named tensors right after the forward."""
    return collate([e.chosen for e in examples] + [e.rejected for e in examples], pad_id)
