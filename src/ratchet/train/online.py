"""On-policy training: every step samples from the current policy, rewards the samples, and updates.

Owns the loop of the ``online`` and ``two_turn`` objectives (RLOO, Ahmadian et al. 2024; SCoRe,
Kumar et al. 2024). It knows nothing of samplers or judges: the caller passes ``rollout(rows,
seed) -> Rollout``, which samples with the model being trained and scores the samples
(``ratchet.loop.rollouts`` builds it from a Sampler and a Judge). One step, visible in
``train_online``:

    rollout on the step's prompts (current weights, eval mode) -> tokenise every sample
    -> reference log-probs (no grad) -> per micro-batch: policy log-probs, objective, backward
    -> clip -> NaN/inf check -> optimizer and schedule step -> rollouts rows, metrics row, checkpoint

Shared with ``train.offline`` (``train.runtime``): the accelerator set-up, the optimizer, the
update with its NaN/inf stop (``NonFiniteError``), the trainer state, metrics rows and checkpoints
(``train.checkpoint``; resuming redoes no finished step and refuses a changed run) and the output
files, plus ``rollouts.jsonl`` (one row per prompt and step: samples, rewards, judge details).
Log-probs are ``logprobs.packed_logps`` over packed rows (``batches.pack``): a prompt is encoded
once and its k completions follow it, scored at completion positions only. Samples are
re-tokenised from their text as the offline trainer does (``data.tokenize``: end-of-turn token
after a completion that ended by itself), so on-policy and offline rounds train on the same token
sequences.

Objective inputs, as the objective declares them (``LossSpec.reads``): policy and reference
log-probs of a rollout sequence are [prompts, k] summed log-probs (``completion`` for single-turn
objectives); a value is a [prompts, k] number from ``Rollout.values`` by its name (``rewards``).
One process only (sampling runs on the unwrapped model); bf16 autocast on a GPU as in train.offline.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ratchet.data.revision import PromptCompletion
from ratchet.data.tokenize import Tokenized, prompt_ids, tokenize_completion
from ratchet.logprobs import supports_4d_mask
from ratchet.losses import LOSSES, LossSpec
from ratchet.train import checkpoint
from ratchet.train.batches import pack
from ratchet.train.metrics import MetricsLog, StepMetrics
from ratchet.train.reference import compute_reference_logps
from ratchet.train.runtime import Progress, make_accelerator, prepare_optimization, strategy


@dataclass
class Rollout:
    """What one step's sampling produced for its prompts (in the order of the rows given)."""

    sequences: dict[str, list[list[PromptCompletion]]]
    """Sequence name -> per prompt, its k samples as (prompt messages, completion text, ended by
    itself). ``completion`` for single-turn objectives; SCoRe: ``first`` and ``second``."""
    values: dict[str, list[list[float]]]
    """Per-sample numbers the objective reads, by input name (``rewards``; SCoRe:
    ``first_rewards``, ``second_rewards``): per prompt, k numbers."""
    records: list[dict] = field(default_factory=list)
    """One JSON row per prompt for rollouts.jsonl (texts, scores, judge details)."""


@dataclass
class _Group:
    """One prompt's tokenised samples, named ``<seq>.<i>``: what ``batches.pack`` and
    ``reference.compute_reference_logps`` read (``sequence(name)``, ``length``)."""

    seqs: dict[str, Tokenized]

    def sequence(self, name: str) -> Tokenized:
        return self.seqs[name]

    @property
    def length(self) -> int:
        return sum(len(s.input_ids) for s in self.seqs.values())


def objective_sequences(spec: LossSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sequences run through the policy, sequences whose reference log-probs are needed)."""
    if not spec.reads.policy:
        raise ValueError(f"objective {spec.name!r} reads no policy log-probs; it cannot be trained on-policy")
    return spec.reads.policy, spec.reads.reference


def _tokenize(tokenizer, seq: PromptCompletion, max_length: int, prompts: dict) -> Tokenized:
    key = repr(seq.messages)
    if key not in prompts:
        prompts[key] = prompt_ids(tokenizer, seq.messages)
    # a sample cut at max_new_tokens with no text left has nothing to score: score its end-of-turn
    complete = seq.complete or not tokenizer(seq.text, add_special_tokens=False)["input_ids"]
    return tokenize_completion(tokenizer, prompts[key], seq.text, complete=complete, max_length=max_length)


def tokenize_rollout(rollout: Rollout, tokenizer, names: tuple[str, ...], max_length: int) -> tuple[list[_Group], int]:
    """One ``_Group`` per prompt holding sequences ``<name>.<i>``; also the count of truncated samples."""
    prompts: dict = {}
    groups, truncated = [], 0
    n_prompts = len(rollout.sequences[names[0]])
    for b in range(n_prompts):
        seqs = {}
        for name in names:
            for i, seq in enumerate(rollout.sequences[name][b]):
                seqs[f"{name}.{i}"] = tok = _tokenize(tokenizer, seq, max_length, prompts)
                truncated += tok.truncated
        groups.append(_Group(seqs))
    return groups, truncated


def _by_sequence(flat: dict[str, torch.Tensor] | torch.Tensor, names: tuple[str, ...], k: int,
                 prefix: str = "") -> dict[str, torch.Tensor]:
    """Packed outputs -> {sequence: [B, k]}. ``flat`` is [len(names) * k * B] in ``pack``'s slot order
    (slot ``(s * k + i) * B + b``), or the per-name dict ``compute_reference_logps`` returns."""
    if isinstance(flat, dict):
        return {s: torch.stack([flat[f"{prefix}_{s}.{i}_logps"] for i in range(k)], -1) for s in names}
    per = flat.view(len(names), k, -1)  # [S, k, B]
    return {s: per[j].transpose(0, 1) for j, s in enumerate(names)}


def objective_inputs(spec: LossSpec, policy: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                     values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors ``spec.fn`` reads, by name (see the module docstring)."""
    out = {}
    for name, (source, seq) in spec.reads.tensors.items():
        if source in ("policy", "ref"):
            out[name] = (policy if source == "policy" else ref)[seq]
        elif name in values:
            out[name] = values[name]
        else:
            raise ValueError(f"objective {spec.name!r} reads {name!r}, which the rollout does not provide "
                             f"(it gives {sorted(values)})")
    return out


def _check_rollout(rollout: Rollout, names: tuple[str, ...], n_prompts: int) -> int:
    """k, after checking that every sequence and value has n_prompts rows of the same k >= 2."""
    shapes = {f"sequences[{n!r}]": [len(x) for x in rollout.sequences.get(n, [])] for n in names}
    shapes |= {f"values[{n!r}]": [len(x) for x in v] for n, v in rollout.values.items()}
    ks = {k for lens in shapes.values() for k in lens}
    if any(len(lens) != n_prompts for lens in shapes.values()) or len(ks) != 1 or min(ks) < 2:
        raise ValueError(f"rollout: expected {n_prompts} prompts with the same k >= 2 samples in every "
                         f"sequence and value, got lengths {shapes}")
    return ks.pop()


def _step_prompts(n: int, per_step: int, *, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return [order[s:s + per_step] for s in range(0, n, per_step)]


def _frozen_reference(model, reference_model, needed: bool, device):
    """The reference model, in eval mode on ``device``: ``reference_model``, else a frozen copy of
    ``model`` as given (for a PEFT model the model itself, its adapter disabled when scoring); None
    if the objective reads no reference."""
    if not needed:
        return None
    if reference_model is None and not hasattr(model, "peft_config"):
        reference_model = copy.deepcopy(model).requires_grad_(False)
    return (reference_model or model).to(device).eval()  # the policy is put back in training mode when prepared


def _reference_logps(reference, groups: list[_Group], names: tuple[str, ...], k: int, accelerator, *, pad: int,
                     batch_size: int, share: bool) -> dict[str, torch.Tensor]:
    """{sequence: [prompts, k]} reference log-probs of the step's samples (no grad)."""
    if not names:
        return {}
    slots = tuple(f"{s}.{i}" for s in names for i in range(k))
    flat = compute_reference_logps(reference, groups, pad, batch_size, False, names=slots, share_prompt=share,
                                   autocast=accelerator.autocast)
    return {s: v.to(accelerator.device) for s, v in _by_sequence(flat, names, k, prefix="ref").items()}


def _accumulate(accelerator, policy, spec: LossSpec, params, groups: list[_Group], prompt_rows: list[int], *,
                names: tuple[str, ...], k: int, ref: dict[str, torch.Tensor], values: dict[str, torch.Tensor],
                pad: int, share: bool, batch_size: int) -> StepMetrics:
    """The step's micro-batches of ``batch_size`` prompts: policy log-probs of sequences ``names``,
    the objective, backward of the micro-batch's share of the mean over the step's prompts.
    ``prompt_rows``: each prompt's row number (1-based) for the metrics. Returns the step's metrics."""
    stats, device = StepMetrics(), accelerator.device
    slots = tuple(f"{s}.{i}" for s in names for i in range(k))
    for m in range(0, len(groups), batch_size):
        micro = list(range(m, min(m + batch_size, len(groups))))
        packed = pack([groups[b] for b in micro], slots, pad, share_prompt=share)
        logps = _by_sequence(policy(**packed.model_inputs(device)), names, k)
        pick = torch.tensor(micro, device=device)
        result = spec.fn(**objective_inputs(spec, logps, {s: v[pick] for s, v in ref.items()},
                                            {n: v[pick] for n, v in values.items()}),
                         **dataclasses.asdict(params))
        accelerator.backward(result.loss.sum() / len(groups))  # the mean over the step's prompts
        stats.add_micro(result, {}, torch.ones(len(micro), device=device), [prompt_rows[b] for b in micro],
                        packed.tokens)
    return stats


def train_online(model, tokenizer, prompts: list[dict], out_dir: str | Path, *,
                 rollout: Callable[[list[dict], int], Rollout], loss: str, loss_params: dict | None = None,
                 lr: float = 1e-5, epochs: int = 1, batch_size: int = 8, grad_accum: int = 1, max_length: int = 256,
                 warmup_ratio: float = 0.1, weight_decay: float = 0.0, max_grad_norm: float = 1.0, seed: int = 0,
                 reference_model=None, rollout_config: dict | None = None, progress: bool = True,
                 resume: bool = False, checkpoint_every: int = 50, keep_checkpoints: int = 2,
                 logps_chunk_size: int = 1024) -> dict:
    """Train ``model`` on-policy on ``prompts`` (rows of prompts.jsonl) with objective ``loss`` (an
    ``online`` or ``two_turn`` one: no default, ``TrainConfig``'s ``dpo`` is not).

    A step takes ``batch_size * grad_accum`` prompts, calls ``rollout(rows, seed)`` once for all of
    them (k samples each), and runs micro-batches of ``batch_size`` prompts; the loss is the mean
    over the step's prompts. ``reference_model`` defaults to a frozen copy of ``model`` as given
    (the adapter-disabled base for a PEFT model). ``rollout_config`` (e.g. sampling settings) is
    recorded in the summary and checked on resume. Defaults of the settings ``TrainConfig`` also has
    are its defaults (config.py; tests/train/test_defaults.py keeps them equal); the loop passes
    them all from it. Returns the summary (train_summary.json)."""
    spec = LOSSES[loss]
    if not spec.on_policy:
        raise ValueError(f"objective {loss!r} trains on {spec.data} files (ratchet.train.offline), not on-policy")
    params = spec.make_params(**(loss_params or {}))
    policy_names, ref_names = objective_sequences(spec)
    names = tuple(dict.fromkeys(policy_names + ref_names))
    if not prompts:
        raise ValueError("train_online: no prompts")
    out_dir = Path(out_dir)
    if resume and (done := checkpoint.finished(out_dir)) is not None:
        print(f"train: {out_dir} holds a finished run; nothing to resume")
        return done
    accelerator = make_accelerator(model, out_dir)
    if accelerator.num_processes > 1:
        raise NotImplementedError("on-policy training runs on one process (it samples with the unwrapped model)")
    set_seed(seed)
    reference = _frozen_reference(model, reference_model, bool(ref_names), accelerator.device)

    # ---- model, optimizer, schedule, trainer state (as train.offline)
    per_step = batch_size * grad_accum
    steps_per_epoch = math.ceil(len(prompts) / per_step)
    total_steps = steps_per_epoch * epochs
    opt = prepare_optimization(accelerator, model, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                               total_steps=total_steps, max_grad_norm=max_grad_norm, logps_chunk_size=logps_chunk_size)
    share, pad = supports_4d_mask(model), tokenizer.pad_token_id
    step_on = functools.partial(_accumulate, accelerator, opt.policy, spec, params, names=policy_names, pad=pad,
                                share=share, batch_size=batch_size)
    run = {"prompts_sha256": hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest(), "loss": loss,
           "params": dataclasses.asdict(params), "seed": seed, "prompts_per_step": per_step,
           "total_steps": total_steps, "rollout": rollout_config or {}}
    state = Progress(accelerator, out_dir, run, counter="samples", resume=resume, checkpoint_every=checkpoint_every,
                     keep_checkpoints=keep_checkpoints)
    samples_log = MetricsLog(out_dir / "rollouts.jsonl", resume_step=state.step, enabled=True)
    bar = tqdm(total=total_steps, initial=state.step, unit="step", desc=f"train {loss} (on-policy)",
               disable=not progress)

    # ---- the loop: each step = rollout -> reference -> micro-batches (forward, objective, backward) -> update
    row, truncated = {}, 0
    while state.step < total_steps:
        epoch, first = divmod(state.step, steps_per_epoch)
        for idx in _step_prompts(len(prompts), per_step, seed=seed, epoch=epoch)[first:]:
            step = state.step + 1
            rows = [prompts[i] for i in idx]
            opt.policy.eval()
            out = rollout(rows, seed * 100_003 + step)  # same step, same samples: a resumed run repeats them
            opt.policy.train()
            k = _check_rollout(out, names, len(rows))
            groups, cut = tokenize_rollout(out, tokenizer, names, max_length)
            truncated += cut
            ref = _reference_logps(reference, groups, ref_names, k, accelerator, pad=pad, batch_size=2 * batch_size,
                                   share=share)
            values = {n: torch.tensor(v, dtype=torch.float32, device=accelerator.device) for n, v in out.values.items()}
            stats = step_on(groups, [i + 1 for i in idx], k=k, ref=ref, values=values)
            update = opt.update(stats, step=step, trained_on=f"prompts {[r.get('id') for r in rows]}",
                                ckpt_root=state.ckpt_root)
            for record in out.records:  # before the checkpoint: a resumed run finds every step's rows
                samples_log.write({"step": step, **record})
            row = state.record(update, epoch=epoch, counted=sum(len(g.seqs) for g in groups))
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", reward=f"{row.get('rewards', float('nan')):.3f}")
    bar.close()
    state.close()
    samples_log.close()

    # ---- the trained model, the summary; checkpoints are no longer needed
    summary = {"loss": loss, "params": dataclasses.asdict(params), "prompts": len(prompts), "steps": state.step,
               "prompts_per_step": per_step, "samples": state.count, "truncated": truncated,
               "rollout": rollout_config or {}, "seconds": state.seconds, "final": row, **strategy(accelerator)}
    checkpoint.finish(accelerator, opt.policy, tokenizer, out_dir, summary)
    accelerator.end_training()
    return summary
