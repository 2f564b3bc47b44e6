"""The training loop, visible top to bottom: pairs -> reference log-probs -> steps -> model.

Built on ``accelerate``: the same function runs on one CPU and under ``accelerate launch`` (DDP;
FSDP and DeepSpeed from accelerate's config files, see ``recipes/accelerate/``), with bf16
autocast on GPUs. It receives flat arguments, never a config object, and writes into ``out_dir``:

    model/               the trained weights (safetensors) and tokenizer
    train_metrics.jsonl  one row per optimizer step
    train_summary.json   counts (pairs, skipped rows, truncated completions), time, final metrics
    checkpoints/         step-N/ every ``checkpoint_every`` steps while training (removed on success)

Step arithmetic: one optimizer step consumes a global batch of
``batch_size * grad_accum * num_processes`` pairs, cut into ``grad_accum`` micro-batches of
``batch_size`` per process (``batches.split_step``; ``max_forward_tokens`` cuts them further, the
same number on every process). The loss of a micro-batch is its summed
per-example loss times ``num_processes / global_pairs`` (DDP averages gradients over processes),
so the gradient is the mean over the global batch however it is cut, the last, partial step
included; gradients are synchronised on the last micro-batch only, and the scheduler steps once
per optimizer step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ratchet.data.records import write_json
from ratchet.data.revision import load_template
from ratchet.data.trl_format import read_pairs
from ratchet.logprobs import supports_4d_mask
from ratchet.losses import LOSSES
from ratchet.train import checkpoint
from ratchet.train.batches import SKIP_HINT, PairsError, epoch_batches, prepare_pairs, row_format, split_step
from ratchet.train.metrics import MetricsLog, StepMetrics
from ratchet.train.reference import cache_key, model_fingerprint, reference_logps
from ratchet.train.step import PolicyLogps, micro_batch_loss, needs


class NonFiniteError(RuntimeError):
    """A NaN or inf loss or gradient; the message names the step and the pairs rows."""



def _accelerator(log_with, out_dir: Path, model=None) -> Accelerator:
    """accelerate's Accelerator for this process. A model the caller put on the CPU stays there even
    where a GPU exists (accelerate would move it to the first GPU); bf16 autocast only on GPUs that
    have bf16 (``ACCELERATE_MIXED_PRECISION`` overrides)."""
    gpu = torch.cuda.is_available()
    on_cpu = model is not None and next(model.parameters()).device.type == "cpu"
    bf16 = gpu and not on_cpu and torch.cuda.is_bf16_supported()
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if bf16 else "no")
    # several processes on a machine without GPUs: DDP over gloo (accelerate needs cpu=True to see it)
    cpu = (gpu and on_cpu) or (not gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    return Accelerator(log_with=log_with, project_dir=str(out_dir), mixed_precision=precision, cpu=cpu)


def _stop_if_not_finite(loss: float, grad_norm: float, stats: StepMetrics, plan, examples, step: int, world: int,
                        ckpt_root: Path) -> None:
    """Raise (on every process: the values are reduced) before a NaN/inf reaches the weights."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    bad_rows = sorted(gather_object(stats.bad_rows) if world > 1 else stats.bad_rows)
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    raise NonFiniteError(
        f"non-finite {what} at step {step} (loss {loss}, grad norm {grad_norm}); "
        f"pairs rows in this step: {sorted(examples[i].row for i in plan.all_indices)}"
        + (f"; rows with a non-finite loss: {bad_rows}" if bad_rows else "")
        + f". Not updated; last good checkpoint: {checkpoint.latest(ckpt_root) or 'none'}")


def _precompute(model, examples, pairs_path: Path, accelerator, *, prefix: str, model_id: str, names, max_length,
                pad: int, batch_size: int, progress: bool) -> dict[str, torch.Tensor]:
    """Reference (or anchor) log-probs of ``names``, cached beside the pairs file."""
    if not names:
        return {}
    key = cache_key(pairs_path, f"{model_id}:{model_fingerprint(model)}", max_length, names)
    model.to(accelerator.device)
    return reference_logps(model, examples, pairs_path.with_name(f"{pairs_path.name}.{prefix}-{key}.safetensors"),
                           accelerator, pad_id=pad, batch_size=batch_size, names=names, prefix=prefix,
                           progress=progress)



def prepare_optimization(accelerator, model, *, lr: float, weight_decay: float, warmup_ratio: float,
                         total_steps: int, logps_chunk_size: int):
    """AdamW on the trainable parameters, linear warm-up and decay over ``total_steps``, and the
    model wrapped as ``PolicyLogps``, all prepared by ``accelerator``; returns
    ``(policy, optimizer, scheduler)``. The scheduler is registered for checkpointing and stepped
    by the caller once per optimizer step. Shared by this loop and ``train.online``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay,
                                  fused=bool(trainable) and trainable[0].device.type in ("cpu", "cuda"))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    policy, optimizer = accelerator.prepare(PolicyLogps(model, logps_chunk_size), optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return policy, optimizer, scheduler


def train_offline(model, tokenizer, pairs_path: str | Path, out_dir: str | Path, *, loss: str = "dpo",
          loss_params: dict | None = None, lr: float = 1e-5, epochs: int = 1, batch_size: int = 8,
          grad_accum: int = 1, max_length: int = 256, warmup_ratio: float = 0.1, weight_decay: float = 0.0,
          max_grad_norm: float = 1.0, seed: int = 0, skip_invalid: bool = False, reference_model=None,
          reference_id: str = "policy-at-start", log_with: str | list | None = None, progress: bool = True,
          resume: bool = False, checkpoint_every: int = 100, keep_checkpoints: int = 2,
          gradient_checkpointing: bool = False, share_prompt: bool = True, shuffle: bool = True,
          max_forward_tokens: int | None = None, anchor_model=None, anchor_id: str = "anchor",
          revision_template: str | None = None, invalid_hint: str | None = SKIP_HINT,
          ref_batch_size: int | None = None, logps_chunk_size: int = 1024, project: str = "ratchet") -> dict:
    """Train ``model`` on the pairs at ``pairs_path`` with objective ``loss``; return the summary.
    (For ``kto`` the file may instead hold unpaired rows, ``batches.ROW_FIELDS``.)

    ``batch_size`` pairs per micro-batch per process, each micro-batch further cut into forward
    passes of at most ``max_forward_tokens`` packed tokens if given (bounds activation memory
    without gradient checkpointing; gradients accumulate); ``resume`` continues from the newest
    complete checkpoint in ``out_dir/checkpoints``; ``checkpoint_every`` steps (0: never);
    ``share_prompt`` encodes each prompt once for all its completions (needs sdpa or eager
    attention; silently off otherwise); ``shuffle=False`` keeps file order (for parity checks);
    ``anchor_model`` is INPO's fixed anchor; ``revision_template`` (a bundled name or a file) makes
    SRPO's revision prompts (default: ``ratchet.data.revision``'s bundled template)."""
    spec = LOSSES[loss]
    params = spec.make_params(**(loss_params or {}))
    rows = read_pairs(pairs_path)  # TRL preference rows become pairs rows; rows with messages pass as is
    fmt = row_format(rows)  # preference pairs, or unpaired labelled examples (KTO)
    need = needs(spec, fmt)
    if need.anchor and anchor_model is None:
        raise ValueError(f"objective {loss!r} reads anchor log-probs: pass anchor_model (the fixed initial model)")
    out_dir, pairs_path = Path(out_dir), Path(pairs_path)
    summary_path, ckpt_root = out_dir / "train_summary.json", out_dir / "checkpoints"
    if resume and summary_path.exists() and (out_dir / "model").is_dir() and not checkpoint.latest(ckpt_root):
        print(f"train: {out_dir} holds a finished run; nothing to resume")
        return json.loads(summary_path.read_text())
    accelerator = _accelerator(log_with, out_dir, model)
    main, device, world = accelerator.is_main_process, accelerator.device, accelerator.num_processes
    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:  # no dataloader to read it from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
    set_seed(seed)

    # ---- data: validate and tokenise every row before any training (errors name the row)
    names = tuple(dict.fromkeys(need.policy + need.reference + need.anchor))
    template = load_template(revision_template) if revision_template else None
    try:
        report = prepare_pairs(rows, tokenizer, max_length=max_length, skip_invalid=skip_invalid, sequences=names,
                               values=need.values, revision_template=template, row_format=fmt, hint=invalid_hint)
    except PairsError as e:  # the row's number, and which file it is in
        raise PairsError(f"{pairs_path}: {e}") from None
    examples, pad = report.examples, tokenizer.pad_token_id
    if not examples:
        why = ("the file has no rows" if not rows else
               f"{len(report.skipped)} invalid rows skipped, {report.identical} with chosen == rejected dropped")
        raise PairsError(f"{pairs_path}: no valid pairs to train on ({why})")
    for row, reason in report.skipped[:10]:
        accelerator.print(f"train: skipped {fmt} row {row}: {reason}")
    if report.skipped:
        accelerator.print(f"train: skipped {len(report.skipped)} invalid rows of {len(rows)}")
    if report.identical:  # no preference to learn; saved in train_summary.json
        accelerator.print(f"train: dropped {report.identical} pairs whose chosen equals rejected")
    if report.truncated:  # never silent: printed here, saved in train_summary.json
        accelerator.print(f"train: {report.truncated} completions truncated to max_length={max_length}")

    # ---- reference log-probs, once per dataset (the policy before any update is the default)
    ref_bs = ref_batch_size or 2 * batch_size
    precomputed = _precompute(reference_model or model, examples, pairs_path, accelerator, prefix="ref",
                              model_id=reference_id, names=need.reference, max_length=max_length, pad=pad,
                              batch_size=ref_bs, progress=progress)
    precomputed |= _precompute(anchor_model, examples, pairs_path, accelerator, prefix="anchor", model_id=anchor_id,
                               names=need.anchor, max_length=max_length, pad=pad, batch_size=ref_bs,
                               progress=progress)

    # ---- model, optimizer, schedule
    if gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    share = share_prompt and supports_4d_mask(model)
    global_batch = batch_size * grad_accum * world
    steps_per_epoch = math.ceil(len(examples) / global_batch)
    total_steps = steps_per_epoch * epochs
    policy, optimizer, scheduler = prepare_optimization(accelerator, model, lr=lr, weight_decay=weight_decay,
                                                        warmup_ratio=warmup_ratio, total_steps=total_steps,
                                                        logps_chunk_size=logps_chunk_size)
    policy.train()

    run = {"pairs_sha256": hashlib.sha256(pairs_path.read_bytes()).hexdigest(), "loss": loss, "seed": seed,
           "global_batch": global_batch, "total_steps": total_steps, "shuffle": shuffle}
    state = {"step": 0, "pairs": 0, "tokens": 0, "seconds": 0.0, "run": run}
    if resume:
        if main:
            checkpoint.remove_partial(ckpt_root)
        accelerator.wait_for_everyone()
        last = checkpoint.latest(ckpt_root)
        if last is not None:
            state = checkpoint.load(accelerator, last, run)
            accelerator.print(f"train: resumed from {last} (step {state['step']} of {total_steps})")
    if log_with:
        accelerator.init_trackers(project, config={"loss": loss, **dataclasses.asdict(params), "lr": lr,
                                                   "batch_size": batch_size, "grad_accum": grad_accum})
    log = MetricsLog(out_dir / "train_metrics.jsonl", resume_step=state["step"], enabled=main)
    bar = tqdm(total=epochs * len(examples), initial=state["pairs"], unit="pair", desc=f"train {loss}",
               disable=not (progress and main), smoothing=0.1)
    mean_across = (lambda t: accelerator.reduce(t, "mean")) if world > 1 else (lambda t: t)
    t0, pairs0, tokens0, seconds0, row = time.time(), state["pairs"], state["tokens"], state["seconds"], {}

    # ---- the loop: each step = micro-batches (forward, objective, backward) -> check -> update
    while state["step"] < total_steps:
        epoch, first = divmod(state["step"], steps_per_epoch)
        for batch in epoch_batches(examples, global_batch, seed=seed, epoch=epoch, shuffle=shuffle)[first:]:
            plan = split_step(examples, batch, batch_size=batch_size, num_processes=world,
                              process_index=accelerator.process_index, max_tokens=max_forward_tokens)
            stats = StepMetrics()
            for m, micro in enumerate(plan.micro):
                last_micro = m == len(plan.micro) - 1
                accelerator.sync_gradients = last_micro  # DeepSpeed reads it in backward
                exs = [examples[i] for i in micro.indices]
                with contextlib.nullcontext() if last_micro else accelerator.no_sync(policy):
                    idx = torch.tensor(micro.indices)
                    loss_sum, out, logps, packed = micro_batch_loss(
                        policy, spec, params, need, exs, {k: v[idx] for k, v in precomputed.items()},
                        pad=pad, share_prompt=share, weights=micro.weights, device=device, mean_across=mean_across)
                    accelerator.backward(loss_sum * world / plan.global_pairs)  # the global-batch mean
                stats.add_micro(out, logps, torch.tensor(micro.weights, device=device), [e.row for e in exs],
                                packed.tokens)
            grad_norm = accelerator.clip_grad_norm_(policy.parameters(),
                                                    max_grad_norm if max_grad_norm > 0 else float("inf"))
            means, totals = stats.reduce(accelerator)
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            _stop_if_not_finite(means["loss"], grad_norm, stats, plan, examples, state["step"] + 1, world,
                                ckpt_root)
            step_lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            state = {"step": state["step"] + 1, "pairs": state["pairs"] + plan.global_pairs,
                     "tokens": state["tokens"] + int(totals["tokens"]),
                     "seconds": seconds0 + time.time() - t0, "run": run}
            elapsed = time.time() - t0
            row = {"step": state["step"], "epoch": epoch, **{k: v for k, v in means.items() if k != "tokens"},
                   "grad_norm": grad_norm, "lr": step_lr, "pairs_per_s": (state["pairs"] - pairs0) / elapsed,
                   "tokens_per_s": (state["tokens"] - tokens0) / elapsed}
            log.write(row)
            if log_with:
                accelerator.log(row, step=state["step"])
            bar.update(plan.global_pairs)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row.get('accuracy', float('nan')):.2f}")
            if checkpoint_every and state["step"] % checkpoint_every == 0 and state["step"] < total_steps:
                checkpoint.save(accelerator, ckpt_root, state["step"], {**state, "epoch": epoch},
                                keep=keep_checkpoints)
    bar.close()
    log.close()

    # ---- the trained model, the summary; checkpoints are no longer needed
    summary = {"loss": loss, "params": dataclasses.asdict(params), "pairs": len(examples),
               "skipped": len(report.skipped), "skipped_rows": report.skipped, "truncated": report.truncated,
               "dropped_identical": report.identical,
               "steps": state["step"], "global_batch": global_batch, "seconds": seconds0 + time.time() - t0,
               "final": row}
    weights_state = accelerator.get_state_dict(policy)  # collective under FSDP/DeepSpeed
    if main:
        inner = accelerator.unwrap_model(policy).model
        inner.save_pretrained(out_dir / "model", state_dict={k.removeprefix("model."): v
                                                             for k, v in weights_state.items()},
                              safe_serialization=True)
        tokenizer.save_pretrained(out_dir / "model")
        write_json(summary_path, summary)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
