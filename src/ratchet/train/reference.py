"""Reference log-probs, computed once per dataset and stored beside the pairs file.

A frozen reference model is never run during training: before the first step, every pair's
chosen and rejected summed log-probs under the reference are computed (no grad) and saved as
``<pairs>.ref-<key>.safetensors``. The key hashes the pairs file, the reference model and
``max_length``, so a changed input never reuses a stale file. With LoRA the reference is the
base model with the adapter disabled; for full fine-tuning it is the policy before training
(or another model given by path).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ratchet.train.batches import PairExample, collate_pairs
from ratchet.train.step import pair_logps


def cache_key(pairs_path: Path, model_id: str, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(Path(pairs_path).read_bytes())
    h.update(f"|{model_id}|{max_length}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_reference_logps(model, examples: list[PairExample], pad_id: int, batch_size: int,
                            progress: bool = True) -> dict[str, torch.Tensor]:
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    order = sorted(range(len(examples)), key=lambda i: examples[i].length)  # little padding
    for s in tqdm(range(0, len(order), batch_size), desc="reference log-probs", disable=not progress):
        idx = order[s:s + batch_size]
        c, r = pair_logps(model, collate_pairs([examples[i] for i in idx], pad_id))
        chosen.append((idx, c.float().cpu()))
        rejected.append((idx, r.float().cpu()))
    model.train(was_training)
    out = {"ref_chosen_logps": torch.zeros(len(examples)), "ref_rejected_logps": torch.zeros(len(examples))}
    for (idx, c), (_, r) in zip(chosen, rejected):
        out["ref_chosen_logps"][idx] = c
        out["ref_rejected_logps"][idx] = r
    return out


def load_or_compute(path: Path, compute) -> dict[str, torch.Tensor]:
    """Read the cached reference log-probs at ``path``, or compute and save them atomically."""
    if path.exists():
        return load_file(str(path))
    tensors = compute()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)
    return tensors
