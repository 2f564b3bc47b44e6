"""LoRA through the loop on the tiny model, 2 rounds: merged into a full model after each round
(the default) or kept as an adapter that the next round loads with PEFT and trains on."""

from __future__ import annotations

import json

import pytest

from ratchet.config import load_config
from ratchet.loop.run import run_loop
from ratchet.models import load_model

from conftest import tiny_run_overrides as _overrides

pytestmark = pytest.mark.slow  # two whole loop rounds


@pytest.mark.parametrize("merge", [True, False])
def test_lora_loop_two_rounds(tmp_path, tiny_model_dir, length_judge, merge):
    o = _overrides(tmp_path, tiny_model_dir) + [f"name=lora-{merge}", "rounds=2", "train.lora.r=4",
                                                f"train.lora.merge={str(merge).lower()}", "gate_tolerance=100"]
    summary = run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / f"lora-{merge}"
    assert [r["kept"] for r in summary["rounds"]] == [True, True, True]
    for r in (1, 2):
        model_dir = run / f"round_{r}" / "train" / "model"
        assert (model_dir / "adapter_config.json").exists() != merge
        assert (model_dir / "config.json").exists() == merge
    # round 2 sampled from round 1's model, whichever form it was saved in
    gen2 = json.loads((run / "round_2" / "manifest.json").read_text())["stages"]["generate"]
    assert gen2["config"]["model"]["path"] == str(run / "round_1" / "train" / "model")
    model, _ = load_model(str(run / "round_2" / "train" / "model"))
    assert hasattr(model, "peft_config") != merge
    if not merge:  # the adapter went on training: round 2's adapter differs from round 1's
        from safetensors.torch import load_file

        a1 = load_file(run / "round_1" / "train" / "model" / "adapter_model.safetensors")
        a2 = load_file(run / "round_2" / "train" / "model" / "adapter_model.safetensors")
        assert a1.keys() == a2.keys() and any((a1[k] != a2[k]).any() for k in a1)
