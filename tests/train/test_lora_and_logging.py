"""LoRA through peft (the reference is the base model, adapter disabled), and observability:
the JSONL metrics and any accelerate tracker get one row per optimizer step."""

import json

import pytest
import torch
from accelerate.tracking import GeneralTracker
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from ratchet.logprobs import packed_logps
from ratchet.train.batches import pack, prepare_pairs
from ratchet.train.offline import train_offline
from ratchet.train.reference import compute_reference_logps

from _kit import fresh_model, metrics, pair_rows, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def _lora(model):
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:  # a trained adapter: its output is no longer zero
            p.data.normal_(0, 0.5)
    return peft


def test_lora_reference_is_the_base_model(tiny_model_dir):
    base, tok = fresh_model(tiny_model_dir)
    examples = prepare_pairs(pair_rows(3), tok, max_length=256).examples
    batch = pack(examples, ("chosen", "rejected"), tok.pad_token_id, share_prompt=True)
    with torch.no_grad():
        base_logps = packed_logps(base, **batch.model_inputs("cpu"))
    peft = _lora(base)
    with torch.no_grad():
        adapted = packed_logps(peft, **batch.model_inputs("cpu"))
    ref = compute_reference_logps(peft, examples, tok.pad_token_id, batch_size=2, progress=False)
    assert (adapted - base_logps).abs().max() > 1e-3  # the adapter matters...
    torch.testing.assert_close(torch.cat([ref["ref_chosen_logps"], ref["ref_rejected_logps"]]), base_logps,
                               atol=1e-5, rtol=0)  # ...and the reference does not see it


def test_lora_training_changes_only_the_adapter(tmp_path, tiny_model_dir):
    model, tok = fresh_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    train_offline(peft, tok, pairs, tmp_path / "run", lr=1e-2, batch_size=4, progress=False, gradient_checkpointing=True)
    adapter = load_file(str(tmp_path / "run" / "model" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)
    base = peft.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(p.detach(), before[name.replace(".base_layer", "")], atol=0, rtol=0)


class ListTracker(GeneralTracker):
    name, requires_logging_directory = "list", False

    def __init__(self):
        super().__init__()
        self.rows, self.config = [], None

    @property
    def tracker(self):
        return self.rows

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.rows.append((step, values))


def test_metrics_go_to_jsonl_and_trackers(tmp_path, tiny_model_dir):
    model, tok = fresh_model(tiny_model_dir)
    tracker = ListTracker()
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    train_offline(model, tok, pairs, tmp_path / "run", batch_size=4, progress=False, log_with=[tracker])
    rows = metrics(tmp_path / "run")
    assert [s for s, _ in tracker.rows] == [r["step"] for r in rows] == [1, 2]
    assert tracker.config["loss"] == "dpo" and tracker.config["beta"] == 0.1
    for key in ("loss", "chosen_rewards", "rejected_rewards", "margins", "accuracy", "chosen_logps",
                "rejected_logps", "grad_norm", "lr", "pairs_per_s", "tokens_per_s"):
        assert key in rows[-1] and rows[-1][key] == tracker.rows[-1][1][key]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["final"]["step"] == 2
