"""What both training loops share around their micro-batches: the accelerator, the optimizer and
its schedule, one optimizer update, and a run's progress.

``train.offline`` (rows from a file) and ``train.online`` (samples drawn while training) differ only
in how a step's micro-batches are made and scored. Everything before the first forward of a run
and after the last backward of a step is here, so both trainers set up, stop, count, log and
checkpoint the same way:

    make_accelerator       one process or ``accelerate launch``; bf16 autocast on GPUs that have it
    prepare_optimization   AdamW, linear warm-up and decay, the model wrapped as ``step.PolicyLogps``
    Optimization.update    clip -> reduce the step's metrics -> NaN/inf stop -> optimizer and schedule step
    Progress               the trainer state a checkpoint carries, ``train_metrics.jsonl`` rows, and
                           a checkpoint every ``checkpoint_every`` steps (``train.checkpoint``)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import get_linear_schedule_with_warmup

from ratchet.train import checkpoint
from ratchet.train.metrics import MetricsLog, StepMetrics
from ratchet.train.step import PolicyLogps


class NonFiniteError(RuntimeError):
    """A NaN or inf loss or gradient; the message names the step and the rows it trained on."""


def make_accelerator(model, out_dir: Path, log_with: str | list | None = None, *,
                     micro_batch_size: int | None = None) -> Accelerator:
    """accelerate's Accelerator for this process. A model the caller put on the CPU stays there even
    where a GPU exists (accelerate would move it to the first GPU); bf16 autocast only on GPUs that
    have bf16 (``ACCELERATE_MIXED_PRECISION`` overrides). Under DeepSpeed, ``micro_batch_size`` is
    its ``train_micro_batch_size_per_gpu`` (there is no dataloader for it to read it from)."""
    gpu = torch.cuda.is_available()
    on_cpu = next(model.parameters()).device.type == "cpu"
    bf16 = gpu and not on_cpu and torch.cuda.is_bf16_supported()
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if bf16 else "no")
    # several processes on a machine without GPUs: DDP over gloo (accelerate needs cpu=True to see it)
    cpu = (gpu and on_cpu) or (not gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    accelerator = Accelerator(log_with=log_with, project_dir=str(out_dir), mixed_precision=precision, cpu=cpu)
    if micro_batch_size is not None and getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch_size
    return accelerator


def strategy(accelerator: Accelerator) -> dict:
    """How a run was distributed, for its summary: processes, accelerate's distributed type (NO,
    MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED) and mixed precision."""
    return {"processes": accelerator.num_processes, "distributed": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision}


def accelerate_env(config_file: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file config_file`` gives its processes for the
    training strategy (FSDP, DeepSpeed, mixed precision), computed by accelerate's own launcher,
    without what places the processes (ranks, addresses, thread counts): where another launcher
    (Ray Train, ``RayExecutor.train``) starts the processes, ``Accelerator()`` in each then builds
    what ``accelerate launch`` would. Raises ``ValueError`` for a file accelerate cannot read."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    if not Path(config_file).is_file():
        raise ValueError(f"no such file: {config_file}")
    try:
        # accelerate's launch_command does these steps before it starts processes (a private helper;
        # tests/train/test_runtime.py runs it on every shipped config, so a change shows there)
        args, defaults, precision_from_file = _validate_launch_command(
            launch_command_parser().parse_args(["--config_file", config_file, "train.py"]))
        if args.use_deepspeed:
            fields = list(defaults.deepspeed_config) if defaults else []
            args.deepspeed_fields_from_accelerate_config = ",".join(fields + ["mixed_precision"] * precision_from_file)
            env = prepare_deepspeed_cmd_env(args)[1]
        else:
            env = prepare_multi_gpu_env(args)
    except (Exception, SystemExit) as e:  # accelerate reports a bad file with ValueError, KeyError, ... or exit
        raise ValueError(f"accelerate cannot use {config_file}: {' '.join(str(e).split())}") from None
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_")) and k != "ACCELERATE_DEBUG_MODE"}


@dataclass(frozen=True)
class Update:
    """What one optimizer update reports."""

    means: dict[str, float]
    """The step's metrics averaged over its real examples on every process (``StepMetrics.reduce``)."""
    totals: dict[str, float]
    """The same summed (``tokens``)."""
    grad_norm: float
    """Before clipping."""
    lr: float
    """The learning rate the step used."""


@dataclass(frozen=True)
class Optimization:
    """The model as prepared for training, its optimizer and schedule (``prepare_optimization``)."""

    accelerator: Accelerator
    policy: torch.nn.Module
    """``step.PolicyLogps`` around the model, prepared (DDP, FSDP, DeepSpeed) by ``accelerator``."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float
    """Gradient clipping norm (0: no clipping; the norm is still measured)."""

    def update(self, stats: StepMetrics, *, step: int, trained_on: str, ckpt_root: Path) -> Update:
        """After a step's backward passes: clip, reduce the step's metrics, stop before a NaN or inf
        reaches the weights (``NonFiniteError``, raised on every process: the values are reduced;
        ``trained_on`` names the step's rows in it), then step the optimizer and the schedule."""
        acc = self.accelerator
        norm = acc.clip_grad_norm_(self.policy.parameters(),
                                   self.max_grad_norm if self.max_grad_norm > 0 else float("inf"))
        means, totals = stats.reduce(acc)
        grad_norm = float(norm) if norm is not None else float("nan")
        if not (math.isfinite(means["loss"]) and math.isfinite(grad_norm)):
            bad_rows = sorted(gather_object(stats.bad_rows) if acc.num_processes > 1 else stats.bad_rows)
            what = "loss" if not math.isfinite(means["loss"]) else "gradient norm"
            raise NonFiniteError(
                f"non-finite {what} at step {step} (loss {means['loss']}, grad norm {grad_norm}); {trained_on}"
                + (f"; rows with a non-finite loss: {bad_rows}" if bad_rows else "")
                + f". Not updated; last good checkpoint: {checkpoint.latest(ckpt_root) or 'none'}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return Update(means, totals, grad_norm, lr)


def prepare_optimization(accelerator, model, *, lr: float, weight_decay: float, warmup_ratio: float,
                         total_steps: int, max_grad_norm: float, logps_chunk_size: int) -> Optimization:
    """AdamW on the trainable parameters, linear warm-up and decay over ``total_steps``, and the
    model wrapped as ``PolicyLogps`` (in training mode), all prepared by ``accelerator``. The scheduler
    is registered for checkpointing and stepped once per optimizer step by ``Optimization.update``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay,
                                  fused=bool(trainable) and trainable[0].device.type in ("cpu", "cuda"))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    policy, optimizer = accelerator.prepare(PolicyLogps(model, logps_chunk_size), optimizer)
    accelerator.register_for_checkpointing(scheduler)
    policy.train()
    return Optimization(accelerator, policy, optimizer, scheduler, max_grad_norm)


class Progress:
    """A run's trainer state, the one a checkpoint carries: ``step``, the ``counter`` total (pairs
    or samples trained on), ``tokens``, ``seconds`` and ``run`` (what a resumed run must match:
    ``run["total_steps"]`` among it); plus its ``train_metrics.jsonl`` and periodic checkpoints.

    With ``resume`` it starts from the newest complete checkpoint under ``out_dir/checkpoints``
    (restored into the prepared objects: make it after ``prepare_optimization``)."""

    def __init__(self, accelerator, out_dir: Path, run: dict, *, counter: str, resume: bool, checkpoint_every: int,
                 keep_checkpoints: int):
        self.accelerator, self.run, self.counter = accelerator, run, counter
        self.ckpt_root = out_dir / checkpoint.DIR
        self.every, self.keep = checkpoint_every, keep_checkpoints
        loaded = checkpoint.resume(accelerator, self.ckpt_root, run) if resume else None
        self.state = loaded or {"step": 0, counter: 0, "tokens": 0, "seconds": 0.0, "run": run}
        self.log = MetricsLog(out_dir / "train_metrics.jsonl", resume_step=self.step,
                              enabled=accelerator.is_main_process)
        self._start, self._t0 = dict(self.state), time.time()

    @property
    def step(self) -> int:
        """Optimizer steps taken, resumed ones included."""
        return self.state["step"]

    @property
    def count(self) -> int:
        """Pairs or samples (``counter``) trained on so far, resumed steps' included."""
        return self.state[self.counter]

    @property
    def seconds(self) -> float:
        """Training time so far, resumed runs' included."""
        return self._start["seconds"] + time.time() - self._t0

    def record(self, update: Update, *, epoch: int, counted: int) -> dict:
        """Count the step just taken (``counted`` pairs or samples), append its metrics row (returned),
        and checkpoint every ``checkpoint_every`` steps but the last (the caller saves the model)."""
        before, c = self.state, self.counter
        self.state = {"step": before["step"] + 1, c: before[c] + counted,
                      "tokens": before["tokens"] + int(update.totals["tokens"]), "seconds": self.seconds,
                      "run": self.run}
        elapsed = time.time() - self._t0
        row = {"step": self.step, "epoch": epoch, **{k: v for k, v in update.means.items() if k != "tokens"},
               "grad_norm": update.grad_norm, "lr": update.lr, f"{c}_per_s": (self.state[c] - self._start[c]) / elapsed,
               "tokens_per_s": (self.state["tokens"] - self._start["tokens"]) / elapsed}
        self.log.write(row)
        if self.every and self.step % self.every == 0 and self.step < self.run["total_steps"]:
            checkpoint.save(self.accelerator, self.ckpt_root, self.step, {**self.state, "epoch": epoch}, keep=self.keep)
        return row

    def close(self) -> None:
        self.log.close()
