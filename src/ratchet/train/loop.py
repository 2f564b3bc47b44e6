"""The training loop, visible top to bottom: batches -> forward -> objective -> backward -> step.

Built on ``accelerate`` so the same function runs on one CPU, under ``accelerate launch`` (DDP,
FSDP, DeepSpeed), with gradient accumulation and bf16 autocast on GPUs. It receives flat
arguments, never a config object. It writes into ``out_dir``:

    model/               the trained weights (safetensors) and tokenizer
    train_metrics.jsonl  one row per optimizer step
    train_summary.json   counts (pairs, skipped rows, truncated completions), time, final metrics
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ratchet.data.records import read_jsonl, write_json
from ratchet.losses import LOSSES
from ratchet.train import reference
from ratchet.train.batches import collate_pairs, length_grouped_batches, prepare_pairs
from ratchet.train.step import pair_logps, pair_loss


class NonFiniteLossError(RuntimeError):
    pass


def _mean_metrics(out, loss) -> dict[str, float]:
    row = {"loss": loss.item()}
    for k, v in out.metrics.items():
        row[k] = v.float().mean().item()
    if "margins" in out.metrics:
        row["accuracy"] = (out.metrics["margins"] > 0).float().mean().item()
    return row


def train(model, tokenizer, pairs_path: str | Path, out_dir: str | Path, *, loss: str = "dpo",
          loss_params: dict | None = None, lr: float = 1e-5, epochs: int = 1, batch_size: int = 8,
          grad_accum: int = 1, max_length: int = 256, warmup_ratio: float = 0.1, weight_decay: float = 0.0,
          max_grad_norm: float = 1.0, seed: int = 0, skip_invalid: bool = False, reference_model=None,
          reference_id: str = "policy-at-start", log_with: str | None = None, progress: bool = True) -> dict:
    """Train ``model`` on the pairs at ``pairs_path`` with objective ``loss``; return the summary."""
    spec = LOSSES[loss]
    params = spec.make_params(**(loss_params or {}))
    out_dir = Path(out_dir)
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum, log_with=log_with,
                              mixed_precision="bf16" if torch.cuda.is_available() else "no")
    set_seed(seed)
    pairs_path = Path(pairs_path)
    report = prepare_pairs(read_jsonl(pairs_path), tokenizer, max_length=max_length, skip_invalid=skip_invalid)
    examples = report.examples
    if not examples:
        raise ValueError(f"{pairs_path}: no valid pairs to train on")
    if report.skipped:
        accelerator.print(f"train: skipped {len(report.skipped)} invalid rows, first: row {report.skipped[0][0]}: "
                          f"{report.skipped[0][1]}")
    if report.truncated:
        accelerator.print(f"train: {report.truncated} completions truncated to max_length={max_length}")
    pad = tokenizer.pad_token_id

    ref = None
    if spec.needs_reference:  # before any update: the untouched policy is the default reference
        key = reference.cache_key(pairs_path, reference_id, max_length)
        ref = reference.load_or_compute(
            pairs_path.with_name(f"{pairs_path.name}.ref-{key}.safetensors"),
            lambda: reference.compute_reference_logps(reference_model or model, examples, pad, batch_size * 2,
                                                      progress and accelerator.is_main_process))

    batches = length_grouped_batches(examples, batch_size, seed=seed)
    steps = math.ceil(len(batches) * epochs / grad_accum)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if log_with:
        accelerator.init_trackers("ratchet", config={"loss": loss, **vars(params), "lr": lr})
    model.train()

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = (out_dir / "train_metrics.jsonl").open("w")
    bar = tqdm(total=steps, desc=f"train {loss}", unit="step", disable=not (progress and accelerator.is_main_process))
    step, pairs_seen, tokens_seen, t0, row = 0, 0, 0, time.time(), {}
    for epoch in range(epochs):
        order = batches if epoch == 0 else length_grouped_batches(examples, batch_size, seed=seed + epoch)
        for micro, idx in enumerate(order[accelerator.process_index::accelerator.num_processes]):
            batch_examples = [examples[i] for i in idx]
            with accelerator.accumulate(model):
                seqs = collate_pairs(batch_examples, pad)
                chosen, rejected = pair_logps(model, seqs)
                half = len(idx)
                out = pair_loss(spec, params, policy_chosen_logps=chosen, policy_rejected_logps=rejected,
                                ref_chosen_logps=ref["ref_chosen_logps"][idx].to(chosen) if ref else None,
                                ref_rejected_logps=ref["ref_rejected_logps"][idx].to(chosen) if ref else None,
                                chosen_lengths=seqs.lengths[:half], rejected_lengths=seqs.lengths[half:])
                loss_value = out.loss.mean()
                if not torch.isfinite(loss_value):
                    raise NonFiniteLossError(f"non-finite loss {loss_value.item()} at step {step + 1}, "
                                             f"pairs rows {[e.row for e in batch_examples]}")
                accelerator.backward(loss_value)
                grad_norm = None
                if accelerator.sync_gradients and max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            pairs_seen += len(idx)
            tokens_seen += int(seqs.attention_mask.sum())
            if accelerator.sync_gradients:
                step += 1
                elapsed = time.time() - t0
                row = {"step": step, "epoch": epoch, **_mean_metrics(out, loss_value),
                       "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "lr": scheduler.get_last_lr()[0], "pairs_per_s": pairs_seen / elapsed,
                       "tokens_per_s": tokens_seen / elapsed}
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                if log_with:
                    accelerator.log(row, step=step)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row.get('accuracy', float('nan')):.2f}",
                                pairs_s=f"{row['pairs_per_s']:.1f}")
    bar.close()
    metrics_file.close()

    accelerator.wait_for_everyone()
    summary = {"loss": loss, "params": vars(params), "pairs": len(examples), "skipped": len(report.skipped),
               "skipped_rows": report.skipped, "truncated": report.truncated, "steps": step,
               "seconds": time.time() - t0, "final": row}
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out_dir / "model", safe_serialization=True)
        tokenizer.save_pretrained(out_dir / "model")
        write_json(out_dir / "train_summary.json", summary)
    accelerator.end_training()
    return summary
