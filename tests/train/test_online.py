"""The on-policy trainer on the tiny model: it samples, rewards, steps, writes metrics, rollouts and a
model; a crashed run resumes exactly; objectives it cannot train are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from _kit import fresh_model
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.judge.base import Judgment
from ratchet.loop.rollouts import judge_reward, single_turn
from ratchet.train import checkpoint
from ratchet.train.online import train_online

pytestmark = pytest.mark.usefixtures("one_thread")


class VowelJudge:
    """A toy reward the tiny model can move: the fraction of vowels in the completion."""

    def judge(self, prompt, completions):
        return [Judgment(score=sum(c in "aeiou" for c in t) / max(len(t), 1), correct=None) for t in completions]


PROMPTS = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"say {i}"}]} for i in range(6)]


def _run(model_dir, out, **kw):
    model, tok = fresh_model(model_dir)
    sampler = CachedSampler(model, tok, batch_size=16, progress=False)
    params = SamplingParams(k=4, temperature=1.0, max_new_tokens=8)
    kw = {"lr": 1e-3, "batch_size": 2, "progress": False, "checkpoint_every": 1, "warmup_ratio": 0.0, **kw}
    return train_online(model, tok, PROMPTS, out, rollout=single_turn(sampler, params, judge_reward(VowelJudge())),
                        loss="rloo", loss_params={"beta": 0.1}, rollout_config={"k": 4}, **kw)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_online_training_writes_metrics_rollouts_and_a_model(tmp_path, tiny_model_dir):
    summary = _run(tiny_model_dir, tmp_path / "run")
    assert summary["steps"] == 3 and summary["samples"] == 24 and summary["prompts_per_step"] == 2
    metrics = _rows(tmp_path / "run" / "train_metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all({"loss", "rewards", "kl", "advantage_abs", "grad_norm", "lr"} <= set(m) for m in metrics)
    assert metrics[0]["kl"] == 0.0  # the first step samples the reference itself
    rollouts = _rows(tmp_path / "run" / "rollouts.jsonl")
    assert sorted(r["id"] for r in rollouts) == sorted(p["id"] for p in PROMPTS)
    assert all(len(r["completions"]) == 4 and len(r["scores"]) == 4 for r in rollouts)
    trained = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    start = fresh_model(tiny_model_dir)[0].state_dict()
    assert any(not torch.equal(trained[n], start[n]) for n in trained)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_crashed_run_resumes_exactly(tmp_path, tiny_model_dir, monkeypatch):
    full = tmp_path / "full"
    _run(tiny_model_dir, full, epochs=2)
    real_save = checkpoint.save

    def save_then_crash(accelerator, root, step, state, *, keep):
        real_save(accelerator, root, step, state, keep=keep)
        if step == 4:
            raise KeyboardInterrupt("killed after the checkpoint of step 4")

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model_dir, crashed, epochs=2)
    monkeypatch.setattr(checkpoint, "save", real_save)
    summary = _run(tiny_model_dir, crashed, epochs=2, resume=True)
    assert summary["steps"] == 6
    a, b = _rows(crashed / "train_metrics.jsonl"), _rows(full / "train_metrics.jsonl")
    assert [r["step"] for r in a] == list(range(1, 7))
    for x, y in zip(a, b):
        for key in ("loss", "rewards", "kl", "grad_norm", "lr"):
            assert x[key] == y[key], (x["step"], key)
    assert len(_rows(crashed / "rollouts.jsonl")) == 12  # rows past the checkpoint were dropped, then redone
    w1, w2 = load_file(str(crashed / "model" / "model.safetensors")), load_file(str(full / "model" / "model.safetensors"))
    for name in w2:
        torch.testing.assert_close(w1[name], w2[name], atol=0, rtol=0)


def test_offline_objectives_are_refused(tmp_path, tiny_model_dir):
    model, tok = fresh_model(tiny_model_dir)
    with pytest.raises(ValueError, match="'dpo' trains on paired files"):
        train_online(model, tok, PROMPTS, tmp_path / "x", rollout=lambda rows, seed: None, loss="dpo")
