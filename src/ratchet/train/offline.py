"""The training loop, visible top to bottom: pairs -> reference log-probs -> steps -> model.

Built on ``accelerate``: the same function runs on one CPU and under ``accelerate launch`` (DDP;
FSDP and DeepSpeed from accelerate's config files, see ``recipes/accelerate/``), with bf16
autocast on GPUs. It receives flat arguments, never a config object, and writes into ``out_dir``:

    model/               the trained weights (safetensors) and tokenizer
    train_metrics.jsonl  one row per optimizer step
    train_summary.json   counts (pairs, skipped rows, truncated completions), time, final metrics,
                         how it was distributed (processes, FSDP/DeepSpeed/DDP, mixed precision)
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
import functools
import hashlib
import math
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ratchet.data.revision import load_template
from ratchet.data.trl_format import read_pairs
from ratchet.logprobs import supports_4d_mask
from ratchet.losses import LOSSES
from ratchet.losses.kto import balanced_weights
from ratchet.train import checkpoint
from ratchet.train.adapters import enable_checkpointing
from ratchet.train.batches import (SKIP_HINT, PairsError, PrepareReport, Step, epoch_batches, prepare_pairs,
                                   row_format, split_step)
from ratchet.train.metrics import StepMetrics
from ratchet.train.reference import cache_key, model_fingerprint, reference_logps
from ratchet.train.runtime import Progress, make_accelerator, prepare_optimization, strategy
from ratchet.train.step import Needs, micro_batch_loss, needs


def _prepare(rows: list[dict], tokenizer, pairs_path: Path, accelerator, need: Needs, *, fmt: str, max_length: int,
             skip_invalid: bool, revision_template: str | None, hint: str | None) -> PrepareReport:
    """Every row validated and tokenised before any training: an error names the file and the row;
    skipped rows, dropped identical pairs and truncated completions are printed, never silent (the
    summary saves them too)."""
    names = tuple(dict.fromkeys(need.policy + need.reference + need.anchor))
    template = load_template(revision_template) if revision_template else None
    try:
        report = prepare_pairs(rows, tokenizer, max_length=max_length, skip_invalid=skip_invalid, sequences=names,
                               values=need.values, revision_template=template, row_format=fmt, hint=hint)
    except PairsError as e:  # the row's number, and which file it is in
        raise PairsError(f"{pairs_path}: {e}") from None
    if not report.examples:
        why = ("the file has no rows" if not rows else
               f"{len(report.skipped)} invalid rows skipped, {report.identical} with chosen == rejected dropped")
        raise PairsError(f"{pairs_path}: no valid pairs to train on ({why})")
    for row, reason in report.skipped[:10]:
        accelerator.print(f"train: skipped {fmt} row {row}: {reason}")
    if report.skipped:
        accelerator.print(f"train: skipped {len(report.skipped)} invalid rows of {len(rows)}")
    if report.identical:  # no preference to learn
        accelerator.print(f"train: dropped {report.identical} pairs whose chosen equals rejected")
    if report.truncated:
        accelerator.print(f"train: {report.truncated} completions truncated to max_length={max_length}")
    return report


def _class_weights(loss: str, fmt: str, rows: list[dict], params: dict) -> dict:
    """KTO on unpaired rows: ``params`` with lambda_D and lambda_U balancing the labels
    (``losses.kto.balanced_weights``) where the caller sets neither; anything else as given."""
    if loss != "kto" or fmt != "unpaired" or {"desirable_weight", "undesirable_weight"} & set(params):
        return params
    n_desirable = sum(1 for row in rows if row.get("label") is True)
    return {**params, **balanced_weights(n_desirable, len(rows) - n_desirable)}


def _precompute(model, examples, pairs_path: Path, accelerator, *, prefix: str, model_id: str, names, max_length,
                pad: int, batch_size: int, progress: bool, share_prompt: bool = True) -> dict[str, torch.Tensor]:
    """Reference (or anchor) log-probs of ``names``, cached beside the pairs file."""
    if not names:
        return {}
    key = cache_key(pairs_path, f"{model_id}:{model_fingerprint(model)}", max_length, names)
    model.to(accelerator.device)
    return reference_logps(model, examples, pairs_path.with_name(f"{pairs_path.name}.{prefix}-{key}.safetensors"),
                           accelerator, pad_id=pad, batch_size=batch_size, names=names, prefix=prefix,
                           progress=progress, share_prompt=None if share_prompt else False)


def _accumulate(accelerator, policy, objective, plan: Step, examples, precomputed) -> StepMetrics:
    """One step's micro-batches on this process: forward, objective (``objective``: ``micro_batch_loss``
    with the run's settings), backward of the micro-batch's share of the global-batch mean; gradients
    are synchronised on the last micro-batch only. Returns the step's metrics on this process."""
    stats = StepMetrics()
    for m, micro in enumerate(plan.micro):
        last_micro = m == len(plan.micro) - 1
        accelerator.sync_gradients = last_micro  # DeepSpeed reads it in backward
        exs = [examples[i] for i in micro.indices]
        with contextlib.nullcontext() if last_micro else accelerator.no_sync(policy):
            idx = torch.tensor(micro.indices)
            loss_sum, out, logps, packed = objective(exs, {k: v[idx] for k, v in precomputed.items()},
                                                     weights=micro.weights)
            accelerator.backward(loss_sum * accelerator.num_processes / plan.global_pairs)  # the global-batch mean
        stats.add_micro(out, logps, torch.tensor(micro.weights, device=accelerator.device), [e.row for e in exs],
                        packed.tokens)
    return stats


def train_offline(model, tokenizer, pairs_path: str | Path, out_dir: str | Path, *, loss: str = "dpo",
                  loss_params: dict | None = None, lr: float = 1e-5, epochs: int = 1, batch_size: int = 8,
                  grad_accum: int = 1, max_length: int = 256, warmup_ratio: float = 0.1, weight_decay: float = 0.0,
                  max_grad_norm: float = 1.0, seed: int = 0, skip_invalid: bool = False, reference_model=None,
                  reference_id: str = "policy-at-start", log_with: str | list | None = None, progress: bool = True,
                  resume: bool = False, checkpoint_every: int = 50, keep_checkpoints: int = 2,
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
    SRPO's revision prompts (default: ``ratchet.data.revision``'s bundled template). Defaults of
    the settings ``TrainConfig`` also has (``loss``, ``lr``, ``epochs``, ...) are its defaults
    (config.py; tests/train/test_defaults.py keeps them equal); the loop passes them all from it."""
    spec = LOSSES[loss]
    rows = read_pairs(pairs_path)  # TRL preference rows become pairs rows; rows with messages pass as is
    fmt = row_format(rows)  # preference pairs, or unpaired labelled examples (KTO)
    params = spec.make_params(**_class_weights(loss, fmt, rows, loss_params or {}))
    need = needs(spec, fmt)
    if need.anchor and anchor_model is None:
        raise ValueError(f"objective {loss!r} reads anchor log-probs: pass anchor_model (the fixed initial model)")
    out_dir, pairs_path = Path(out_dir), Path(pairs_path)
    if resume and (done := checkpoint.finished(out_dir)) is not None:
        print(f"train: {out_dir} holds a finished run; nothing to resume")
        return done
    accelerator = make_accelerator(model, out_dir, log_with, micro_batch_size=batch_size)
    world = accelerator.num_processes
    set_seed(seed)
    report = _prepare(rows, tokenizer, pairs_path, accelerator, need, fmt=fmt, max_length=max_length,
                      skip_invalid=skip_invalid, revision_template=revision_template, hint=invalid_hint)
    examples, pad = report.examples, tokenizer.pad_token_id

    # ---- reference log-probs, once per dataset (the policy before any update is the default)
    cached = functools.partial(_precompute, examples=examples, pairs_path=pairs_path, accelerator=accelerator,
                               max_length=max_length, pad=pad, batch_size=ref_batch_size or 2 * batch_size,
                               progress=progress, share_prompt=share_prompt)
    precomputed = cached(reference_model or model, prefix="ref", model_id=reference_id, names=need.reference)
    precomputed |= cached(anchor_model, prefix="anchor", model_id=anchor_id, names=need.anchor)

    # ---- model, optimizer, schedule, trainer state (resumed from the newest checkpoint if asked)
    if gradient_checkpointing:
        enable_checkpointing(model)
    share = share_prompt and supports_4d_mask(model)
    global_batch = batch_size * grad_accum * world
    steps_per_epoch = math.ceil(len(examples) / global_batch)
    total_steps = steps_per_epoch * epochs
    opt = prepare_optimization(accelerator, model, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                               total_steps=total_steps, max_grad_norm=max_grad_norm, logps_chunk_size=logps_chunk_size)
    mean_across = (lambda t: accelerator.reduce(t, "mean")) if world > 1 else (lambda t: t)
    objective = functools.partial(micro_batch_loss, opt.policy, spec, params, need, pad=pad, share_prompt=share,
                                  device=accelerator.device, mean_across=mean_across)
    run = {"pairs_sha256": hashlib.sha256(pairs_path.read_bytes()).hexdigest(), "loss": loss, "seed": seed,
           "global_batch": global_batch, "total_steps": total_steps, "shuffle": shuffle}
    state = Progress(accelerator, out_dir, run, counter="pairs", resume=resume, checkpoint_every=checkpoint_every,
                     keep_checkpoints=keep_checkpoints)
    if log_with:
        accelerator.init_trackers(project, config={"loss": loss, **dataclasses.asdict(params), "lr": lr,
                                                   "batch_size": batch_size, "grad_accum": grad_accum})
    bar = tqdm(total=epochs * len(examples), initial=state.count, unit="pair", desc=f"train {loss}",
               disable=not (progress and accelerator.is_main_process), smoothing=0.1)

    # ---- the loop: each step = micro-batches (forward, objective, backward) -> check -> update
    row = {}
    while state.step < total_steps:
        epoch, first = divmod(state.step, steps_per_epoch)
        for batch in epoch_batches(examples, global_batch, seed=seed, epoch=epoch, shuffle=shuffle)[first:]:
            plan = split_step(examples, batch, batch_size=batch_size, num_processes=world,
                              process_index=accelerator.process_index, max_tokens=max_forward_tokens)
            stats = _accumulate(accelerator, opt.policy, objective, plan, examples, precomputed)
            rows_here = sorted(examples[i].row for i in plan.all_indices)
            update = opt.update(stats, step=state.step + 1, trained_on=f"pairs rows in this step: {rows_here}",
                                ckpt_root=state.ckpt_root)
            row = state.record(update, epoch=epoch, counted=plan.global_pairs)
            if log_with:
                accelerator.log(row, step=state.step)
            bar.update(plan.global_pairs)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row.get('accuracy', float('nan')):.2f}")
    bar.close()
    state.close()

    # ---- the trained model, the summary; checkpoints are no longer needed
    summary = {"loss": loss, "params": dataclasses.asdict(params), "pairs": len(examples),
               "skipped": len(report.skipped), "skipped_rows": report.skipped, "truncated": report.truncated,
               "dropped_identical": report.identical, "steps": state.step, "global_batch": global_batch,
               "seconds": state.seconds, "final": row, **strategy(accelerator)}
    checkpoint.finish(accelerator, opt.policy, tokenizer, out_dir, summary)
    accelerator.end_training()
    return summary
