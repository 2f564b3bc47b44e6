"""train.adapters: gradient checkpointing under the installed transformers' current name, and
``lora_training`` (the loop's wrap-train-merge around one stage) merging only a stage that ended."""

import contextlib
import warnings

import pytest

from ratchet.config import AdapterConfig
from ratchet.train.adapters import enable_checkpointing, is_peft, lora_training

from _kit import fresh_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpointing_uses_the_current_name(tiny_model_dir):
    model, _ = fresh_model(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated alias warns
        enable_checkpointing(model)
    assert all(layer.gradient_checkpointing for layer in model.model.layers)


def test_checkpointing_falls_back_to_the_old_name():
    calls = []

    class Old:  # transformers before activation_checkpointing_enable
        def gradient_checkpointing_enable(self, kwargs=None):
            calls.append(kwargs)

    enable_checkpointing(Old())
    assert calls == [{"use_reentrant": False}]


@pytest.mark.parametrize("fail", [False, True])
def test_lora_training_merges_only_a_finished_stage(tmp_path, tiny_model_dir, fail):
    model, tok = fresh_model(tiny_model_dir)
    target = tmp_path / "model"
    lora = AdapterConfig(r=2, alpha=4, merge=True)
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        with lora_training(model, tok, lora, gradient_checkpointing=False, model_dir=target) as wrapped:
            assert is_peft(wrapped)
            wrapped.save_pretrained(target)  # what a trainer leaves: the adapter alone
            if fail:
                raise RuntimeError("the stage failed")
    names = {p.name for p in target.iterdir()}
    if fail:  # the adapter stays for a resumed stage; nothing half-merged
        assert "adapter_config.json" in names and "config.json" not in names
    else:
        assert "config.json" in names and "adapter_config.json" not in names and "tokenizer_config.json" in names
