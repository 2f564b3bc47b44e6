"""Helpers for the trainer tests: a small pairs file and a fresh tiny model per run."""

from __future__ import annotations

import json
from pathlib import Path

from ratchet.data.records import write_jsonl
from ratchet.train.offline import train_offline


def pair_rows(n: int) -> list[dict]:
    """``n`` pairs with prompts and answers of varying length (byte tokenizer: 1 token per char)."""
    return [{"id": f"p{i}", "messages": [{"role": "user", "content": f"what is {i} + {i % 3}?" + " please" * (i % 4)}],
             "chosen": f"{i} + {i % 3} = {i + i % 3}." + " ok" * (i % 5),
             "rejected": f"{i} + {i % 3} = {i + i % 3 + 1}" + "!" * (i % 7)} for i in range(n)]


def write_pairs(path: Path, n: int = 12, rows: list[dict] | None = None) -> Path:
    return write_jsonl(path, rows if rows is not None else pair_rows(n))


def fresh_model(model_dir):
    from ratchet.models import load_model

    model, tok = load_model(str(model_dir))
    return model, tok


def run(model_dir, pairs: Path, out: Path, *, dropout: float = 0.0, **kw) -> dict:
    """Train a fresh copy of the tiny model; ``dropout`` > 0 makes the run consume random numbers."""
    model, tok = fresh_model(model_dir)
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = dropout
    kw = {"lr": 1e-3, "batch_size": 4, "max_length": 256, "progress": False, "warmup_ratio": 0.0, **kw}
    return train_offline(model, tok, pairs, out, **kw)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "train_metrics.jsonl").read_text().splitlines()]
