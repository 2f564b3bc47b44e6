"""Exact repeats: the same recipe and seed, run twice on one machine with one thread count, writes
the same bytes in every file but the declared timing/bookkeeping ones (``loop.run.REPEAT_EXCLUDED``)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import pytest

from ratchet.config import load_config
from ratchet.loop.run import REPEAT_EXCLUDED, repeat_hashes, run_loop

from conftest import tiny_run_overrides

TIMING_KEYS = ("seconds", "pairs_per_s", "tokens_per_s")
"""The wall-clock keys of the trainer's logs (the reason those files are excluded)."""


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    return obj


def _train_logs(run: Path) -> dict:
    out = {}
    for path in sorted(run.glob("round_*/train/train_*.json*")):
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.suffix == ".jsonl" \
            else [json.loads(path.read_text())]
        out[path.relative_to(run).as_posix()] = [_without_timing(r) for r in rows]
    return out


def _caches(run: Path) -> list[str]:
    """The log-prob caches' contents (their names hash the model's mtimes)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in run.glob("round_*/*.ref-*.safetensors"))


@pytest.mark.slow
def test_a_two_round_loop_run_twice_is_byte_identical(tmp_path, tiny_model_dir, length_judge, monkeypatch):
    # the same relative runs_dir from two working directories: paths written into files are equal
    overrides = [o for o in tiny_run_overrides(tmp_path, tiny_model_dir) if not o.startswith(("runs_dir=", "name="))]
    overrides += ["runs_dir=runs", "name=repeat", "rounds=2", "seed=11", "gate_tolerance=100"]  # round 2 trains
    # on round 1's model (a second round from a trained model, not a rollback)
    runs = []
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        run_loop(load_config(None, overrides), progress=False)
        runs.append(tmp_path / where / "runs" / "repeat")
    first, second = (repeat_hashes(run) for run in runs)
    assert first == second, sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    # every stage's outputs are among the files compared
    assert {"config.yaml", "heldout.jsonl", "summary.json", "report.html", "round_0/eval/answers.jsonl",
            "round_0/eval/metrics.json"} <= set(first)
    for r in (1, 2):
        assert {f"round_{r}/{name}" for name in ("prompts.jsonl", "completions.jsonl", "judgments.jsonl",
                                                  "pairs.jsonl", "metrics.json", "train/model/model.safetensors",
                                                  "eval/answers.jsonl", "eval/judgments.jsonl")} <= set(first)
    # the excluded files hold timings (or name a model by mtime); what else they hold is the same too
    excluded = [p for p in runs[0].rglob("*") if p.is_file() and p.relative_to(runs[0]).as_posix() not in first]
    assert excluded and all(any(fnmatch.fnmatch(p.relative_to(runs[0]).as_posix(), pattern)
                                for pattern in REPEAT_EXCLUDED) for p in excluded)
    assert _train_logs(runs[0]) == _train_logs(runs[1]) and len(_train_logs(runs[0])) == 4
    assert _caches(runs[0]) == _caches(runs[1]) and _caches(runs[0])
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["seed"] == 11 and summary["threads"] >= 1 and [r["kept"] for r in summary["rounds"]] == [True] * 3


def test_a_new_adapter_is_initialised_from_the_seed(tiny_model_dir):
    """LoRA's A matrices come from torch's global generator; seeded by ``train.seed``, not by history."""
    import torch

    from ratchet.models import load_model
    from ratchet.train.adapters import add_lora

    def adapter(seed, draws_before):
        model, _ = load_model(str(tiny_model_dir))
        torch.rand(draws_before)  # whatever else drew from the global generator first
        peft = add_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["q_proj"], seed=seed)
        return torch.cat([p.detach().flatten() for n, p in peft.named_parameters() if "lora_A" in n])

    assert torch.equal(adapter(3, 1), adapter(3, 7))
    assert not torch.equal(adapter(3, 1), adapter(4, 1))
