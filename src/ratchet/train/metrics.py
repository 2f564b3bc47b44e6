"""Per-step metrics: summed over micro-batches and processes, then averaged; one JSONL row per step.

``StepMetrics`` keeps a sum and a count per metric, so the logged mean is over every real pair of
the global batch however it was split (fillers have weight 0 and do not count); one
``all_reduce`` per step gathers all processes. ``MetricsLog`` appends rows to
``train_metrics.jsonl``; on resume it first drops rows past the checkpoint, so the file reads as
if the run had never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ratchet.data.records import write_jsonl


class StepMetrics:
    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.bad_rows: list[int] = []
        """Rows (1-based, pairs file) whose loss was NaN or inf in this step, this process."""

    def add(self, name: str, values: torch.Tensor, weights: torch.Tensor) -> None:
        """Add the real entries of ``values`` ([k * B] or a scalar) under ``name``."""
        values = values.detach().float().reshape(-1)
        if values.numel() % weights.numel() == 0:
            w = weights.repeat(values.numel() // weights.numel())
        else:  # a per-batch value (scalar, or a subset such as KTO's chosen rewards)
            w = torch.full_like(values, float(weights.max()))
        self.sums[name] = self.sums.get(name, 0.0) + float((values * w).sum())
        self.counts[name] = self.counts.get(name, 0.0) + float(w.sum())

    def add_micro(self, out, logps: dict[str, torch.Tensor], weights: torch.Tensor, rows: list[int],
                  tokens: int) -> None:
        """Everything one micro-batch contributes: the loss and the objective's metrics, reward
        accuracy, policy log-probs, tokens, and the rows whose loss is not finite."""
        self.add("loss", out.loss, weights)
        for k, v in out.metrics.items():
            self.add(k, v, weights)
        if "margins" in out.metrics:
            self.add("accuracy", (out.metrics["margins"] > 0).float(), weights)
        for name in ("chosen", "rejected", "completion"):  # completion: an unpaired row's (KTO)
            if name in logps:
                self.add(f"{name}_logps", logps[name], weights)
        self.add_total("tokens", float(tokens))
        per_pair = out.loss.numel() // len(rows)
        bad = ~torch.isfinite(out.loss.detach().view(per_pair, -1)).all(0) & (weights > 0)
        self.bad_rows += [r for r, b in zip(rows, bad.tolist()) if b]

    def add_total(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] = 1.0

    def reduce(self, accelerator) -> tuple[dict[str, float], dict[str, float]]:
        """(means, totals) over all processes; keys must match across processes (they do: every
        process runs the same objective on the same number of micro-batches)."""
        names = sorted(self.sums)
        packed = torch.tensor([[self.sums[n], self.counts[n]] for n in names], dtype=torch.float64,
                              device=accelerator.device)
        if accelerator.num_processes > 1:
            packed = accelerator.reduce(packed, reduction="sum")
        means = {n: float(s / c) if c > 0 else float("nan") for n, (s, c) in zip(names, packed.tolist())}
        totals = {n: float(s) for n, (s, _) in zip(names, packed.tolist())}
        return means, totals


class MetricsLog:
    def __init__(self, path: Path, *, resume_step: int, enabled: bool):
        self.path, self.file = path, None
        if not enabled:
            return
        kept = []
        if resume_step and path.exists():
            kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in kept if r.get("step", 0) <= resume_step]
        write_jsonl(path, kept)
        self.file = path.open("a")

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
