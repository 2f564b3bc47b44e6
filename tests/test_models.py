"""Loading any model: hub ids (dots included) from the local Hugging Face cache, offline errors,
and the recipe's dtype and device reaching every stage of a round."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ratchet import cli
from ratchet.config import ConfigError, load_config
from ratchet.loop import model_cache
from ratchet.loop import stages
from ratchet.models import ModelNotFoundError, load_model, resolve_model

from conftest import tiny_run_overrides as _overrides

REPO = "Qwen/Qwen2.5-0.5B-Instruct"  # a dotted id: its ".5B-Instruct" is no file suffix


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    """A Hugging Face cache holding the tiny model under a hub id, as a download would leave it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo / "snapshots" / commit


def test_dotted_hub_id_resolves_from_the_cache(hub_cache):
    assert resolve_model(REPO) == str(hub_cache)
    model, tok = load_model(REPO, device="cpu")
    assert model.config.vocab_size == len(tok)


def test_offline_hub_id_not_cached_fails_at_once(hub_cache):
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_model("someone/Not-Here-1.5B")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./no/such/dir")


def test_model_spec_in_a_recipe(tmp_path):
    cfg = load_config(None, ["model=Qwen/Qwen2.5-0.5B-Instruct", "model.dtype=bfloat16"])
    assert cfg.model.path == REPO and cfg.model.load_options()["dtype"] == "bfloat16"
    assert load_config(None, []).model.load_options() == {"dtype": "auto", "device": "auto", "revision": None,
                                                          "attn_implementation": None, "trust_remote_code": False}
    for bad in ("model.dtype=fp8", "model.device=tpu"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


def test_auto_is_float32_on_cpu(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir))
    assert next(model.parameters()).dtype == torch.float32 and next(model.parameters()).device.type == "cpu"


@pytest.mark.slow
def test_dtype_and_device_reach_every_stage(tmp_path, tiny_model_dir, length_judge, monkeypatch):
    """A bfloat16 round on the CPU: every model load gets the recipe's options, and every stage that
    runs a model gets it in bfloat16."""
    loads, seen = [], []
    real_load = model_cache.load_model

    def load(path, **options):
        loads.append(options)
        return real_load(path, **options)

    monkeypatch.setattr(model_cache, "load_model", load)
    for name in ("generate", "train_model", "evaluate"):
        real = getattr(stages, name)

        def spy(model, *a, _real=real, _name=name, **k):
            p = next(model.parameters())
            seen.append((_name, p.dtype, p.device.type))
            return _real(model, *a, **k)

        monkeypatch.setattr(stages, name, spy)
    o = _overrides(tmp_path, tiny_model_dir) + ["name=bf16", "model.dtype=bfloat16", "model.device=cpu"]
    assert cli.main(["loop", *o]) == 0
    assert loads and all(opt["dtype"] == "bfloat16" and opt["device"] == "cpu" for opt in loads)
    assert {n for n, _, _ in seen} == {"generate", "train_model", "evaluate"}
    assert all(dtype == torch.bfloat16 and device == "cpu" for _, dtype, device in seen), seen
    trained = json.loads((tmp_path / "runs" / "bf16" / "round_1" / "train" / "train_summary.json").read_text())
    assert trained["steps"] >= 1 and trained["final"]["loss"] == trained["final"]["loss"]  # finite, not NaN


def test_vllm_options_are_checked_and_the_engine_is_closed_after_a_stage(tmp_path, tiny, monkeypatch):
    cfg = load_config(None, ["generate.sampler=vllm", "generate.vllm.gpu_memory_utilization=0.5",
                             "generate.vllm.enforce_eager=true"])
    assert cfg.generate.vllm == {"gpu_memory_utilization": 0.5, "enforce_eager": True}
    for bad, match in (("generate.vllm.swap=1", "generate.vllm.swap: unknown option"),
                       ("generate.vllm.tensor_parallel_size=two", "generate.vllm.tensor_parallel_size")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])
    made, closed = [], []

    class FakeEngine:  # stands in for VLLMSampler: vLLM needs a GPU
        def __init__(self, model, tokenizer, *, batch_size, progress, **options):
            made.append((model.name_or_path, options))

        def sample(self, prompts, params):
            from ratchet.generate.base import Sample

            return [[Sample("4", 1, "eos") for _ in range(params.k)] for _ in prompts]

        def close(self):
            closed.append(True)

    monkeypatch.setitem(stages.SAMPLERS, "vllm", FakeEngine)
    prompts = stages.make_prompts(stages.make_task(cfg.task), "heldout", tmp_path / "p.jsonl", 2)
    stages.generate(*tiny, prompts, tmp_path / "c.jsonl", cfg.generate, progress=False)
    assert made == [(tiny[0].name_or_path, {"gpu_memory_utilization": 0.5, "enforce_eager": True})]
    assert closed == [True]
