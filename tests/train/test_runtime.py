"""``train.runtime.accelerate_env``: what ``accelerate launch --config_file`` would set for the
training strategy, for Ray Train's workers (``executor.train_config``), from accelerate's own launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratchet.train.runtime import accelerate_env

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"
PLACEMENT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")


def test_each_shipped_config_gives_its_strategy_and_nothing_that_places_processes():
    fsdp, deepspeed, ddp = (accelerate_env(str(CONFIGS / f"{name}.yaml")) for name in ("fsdp", "deepspeed", "ddp"))
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_VERSION"] == "2"
    assert fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    assert deepspeed["ACCELERATE_USE_DEEPSPEED"] == "true" and deepspeed["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    assert "mixed_precision" in deepspeed["ACCELERATE_CONFIG_DS_FIELDS"].split(",")
    assert not any(k.startswith("FSDP_") or "DEEPSPEED" in k for k in ddp)
    for env in (fsdp, deepspeed, ddp):
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
        assert not set(PLACEMENT) & set(env)


def test_a_file_accelerate_cannot_read_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: [unclosed\n")
    with pytest.raises(ValueError, match=r"^accelerate cannot use .*bad\.yaml: ") as e:
        accelerate_env(str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no such file: nope.yaml"):
        accelerate_env("nope.yaml")
