"""Reference log-probs, computed once per dataset and stored beside the pairs file.

A frozen reference model is never run during training: before the first step, every needed
sequence's summed log-prob under the reference is computed (no grad) and saved as
``<pairs>.ref-<key>.safetensors``, with the row numbers it belongs to. The key hashes the pairs
file, a fingerprint of the reference weights, ``max_length`` and the sequence names, so a changed
input never reuses a stale file. With LoRA the reference is the base model with the adapter
disabled (``model.disable_adapter()``); for full fine-tuning it is the policy before training
(or another model given by the caller). Under data parallelism each process computes a shard
and the shards are gathered, so the work is split, not repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ratchet.logprobs import packed_logps, supports_4d_mask
from ratchet.train.batches import PairExample, pack


def model_fingerprint(model) -> str:
    """A cheap hash of a model's identity: config, parameter names and shapes, and a strided
    sample of every weight (LoRA weights excluded: the reference is the base model)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else {}, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)].float().cpu()
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(pairs_path: Path, model_id: str, max_length: int, names: tuple[str, ...] = ("chosen", "rejected")) -> str:
    h = hashlib.sha256()
    h.update(Path(pairs_path).read_bytes())
    h.update(f"|{model_id}|{max_length}|{','.join(names)}".encode())
    return h.hexdigest()[:16]


def _no_adapter(model):
    """The base model of a PEFT model (adapter disabled); any other model as is."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") and hasattr(model, "peft_config") \
        else contextlib.nullcontext()


@torch.no_grad()
def compute_reference_logps(model, examples: list[PairExample], pad_id: int, batch_size: int,
                            progress: bool = True, *, names: tuple[str, ...] = ("chosen", "rejected"),
                            prefix: str = "ref", share_prompt: bool | None = None,
                            autocast=contextlib.nullcontext) -> dict[str, torch.Tensor]:
    """``{f"{prefix}_{name}_logps": [len(examples)]}`` under ``model`` (adapter disabled for PEFT).
    ``share_prompt`` (default: wherever the attention takes a 4D mask) packs each example's
    sequences as one prefix tree (``batches.pack``), so each prompt is computed once."""
    share_prompt = supports_4d_mask(model) if share_prompt is None else share_prompt
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {name: torch.zeros(len(examples)) for name in names}
    order = sorted(range(len(examples)), key=lambda i: examples[i].length)  # little padding
    with _no_adapter(model), autocast():
        for s in tqdm(range(0, len(order), batch_size), desc=f"{prefix} log-probs", disable=not progress):
            idx = order[s:s + batch_size]
            batch = pack([examples[i] for i in idx], names, pad_id, share_prompt=share_prompt)
            logps = packed_logps(model, **batch.model_inputs(device)).float().cpu().view(len(names), -1)
            for k, name in enumerate(names):
                out[name][idx] = logps[k]
    model.train(was_training)
    return {f"{prefix}_{name}_logps": v for name, v in out.items()}


def _save_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path, examples: list[PairExample]) -> dict[str, torch.Tensor] | None:
    """The cached values in ``examples`` order, or None if the file lacks a row."""
    if not path.exists():
        return None
    stored = load_file(str(path))
    where = {int(r): i for i, r in enumerate(stored.pop("rows").tolist())}
    if any(e.row not in where for e in examples):
        return None
    idx = torch.tensor([where[e.row] for e in examples], dtype=torch.long)
    return {k: v[idx] for k, v in stored.items()}


def reference_logps(model, examples: list[PairExample], path: Path, accelerator, *, pad_id: int, batch_size: int,
                    names: tuple[str, ...], prefix: str = "ref", progress: bool = True,
                    share_prompt: bool | None = None) -> dict[str, torch.Tensor]:
    """Load the cached log-probs at ``path`` or compute them, each process one shard, and save
    the gathered result atomically (main process). Returns them in ``examples`` order.
    ``share_prompt``: as in ``compute_reference_logps`` (the values do not depend on it, so it
    is not part of the cache key)."""
    cached = _load(path, examples)
    if cached is not None:
        return cached
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = examples[rank::world]
    values = compute_reference_logps(model, mine, pad_id, batch_size, progress and accelerator.is_main_process,
                                     names=names, prefix=prefix, share_prompt=share_prompt,
                                     autocast=accelerator.autocast) if mine else {}
    shard = [(e.row, {k: float(v[i]) for k, v in values.items()}) for i, e in enumerate(mine)]
    by_row = dict(gather_object(shard) if world > 1 else shard)
    keys = [f"{prefix}_{name}_logps" for name in names]
    out = {k: torch.tensor([by_row[e.row][k] for e in examples], dtype=torch.float32) for k in keys}
    if accelerator.is_main_process:
        _save_atomic(path, {"rows": torch.tensor([e.row for e in examples], dtype=torch.long), **out})
    accelerator.wait_for_everyone()
    return out
