"""Per-round metrics in TensorBoard, and a run's model exported as a standard model directory that
loads alone and answers as the run's model did (LoRA adapters merged)."""

from __future__ import annotations

import json

import pytest
import torch

from ratchet import cli
from ratchet.config import ConfigError, load_config
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.loop.run import run_loop
from ratchet.loop.trackers import TRACKERS
from ratchet.models import load_model

from conftest import tiny_run_overrides as _overrides


def test_tracker_names_are_accelerates():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert set(TRACKERS) == set(LOGGER_TYPE_TO_CLASS)
    with pytest.raises(ConfigError, match="log.report_to"):
        load_config(None, ["log.report_to=[tensorboardx]"])


@pytest.mark.slow
def test_tensorboard_gets_each_rounds_metrics(tmp_path, tiny_model_dir, length_judge):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    o = _overrides(tmp_path, tiny_model_dir) + ["name=tb", "log.report_to=[tensorboard]"]
    run_loop(load_config(None, o), progress=False)
    logs = tmp_path / "runs" / "tb" / "logs" / "tb"
    events = event_accumulator.EventAccumulator(str(logs))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"mean_score", "pairs_kept", "train_loss", "seconds/generate", "seconds/train"} <= set(tags), tags
    assert [e.step for e in events.Scalars("mean_score")] == [0, 1]
    assert list((tmp_path / "runs" / "tb" / "round_1" / "train").rglob("events.out.tfevents.*"))  # per step


def _greedy(model_dir, prompts):
    model, tok = load_model(str(model_dir))
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=8)
    return [s[0].text for s in CachedSampler(model, tok, batch_size=4, progress=False).sample(prompts, params)]


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.slow
def test_export_round_trip(tmp_path, tiny_model_dir, length_judge, lora):
    extra = ["train.lora.r=4", "train.lora.merge=false"] if lora else []
    o = _overrides(tmp_path, tiny_model_dir) + ["name=ex", "gate_tolerance=100", *extra]
    summary = run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / "ex"
    out = tmp_path / "exported"
    assert cli.main(["export", "--model", str(run / "best"), "--to", str(out)]) == 0
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert isinstance(AutoModelForCausalLM.from_pretrained(out), torch.nn.Module)
    card = (out / "README.md").read_text()
    assert "| 1 |" in card and "held-out mean_score" in card and "## Recipe" in card
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]
    assert _greedy(out, prompts) == _greedy(summary["best_model"], prompts)
    assert cli.main(["export", "--model", str(run), "--pairs", "x"]) == 2
