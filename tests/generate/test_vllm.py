"""``VLLMSampler``'s conversions, with stand-ins for vLLM's objects (no GPU, no vLLM here)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from ratchet.generate.base import SamplingParams
from ratchet.generate.vllm import VLLMSampler, is_available, prompt_seed, to_sample, vllm_kwargs


def test_sampling_params_for_vllm():
    params = SamplingParams(k=8, temperature=0.8, top_p=0.9, max_new_tokens=96, stop=("\n\n",), seed=3)
    kwargs = vllm_kwargs(params, prompt=5)
    assert kwargs == dict(n=8, temperature=0.8, top_p=0.9, max_tokens=96, stop=["\n\n"],
                          include_stop_str_in_output=True, skip_special_tokens=True, seed=prompt_seed(3, 5))
    assert vllm_kwargs(SamplingParams(), prompt=0)["stop"] is None
    seeds = {prompt_seed(seed, prompt) for seed in range(3) for prompt in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**31 for s in seeds)


def test_completion_outputs_become_samples(tiny_tokenizer):
    params = SamplingParams(k=1, stop=("\n\n",))
    eos = tiny_tokenizer.eos_token_id
    ids = tiny_tokenizer("Answer: 4", add_special_tokens=False)["input_ids"]
    eos_out = SimpleNamespace(text="Answer: 4", token_ids=ids + [eos], finish_reason="stop", stop_reason=None)
    assert to_sample(eos_out, tiny_tokenizer, params).__dict__ == dict(
        text="Answer: 4", num_tokens=len(ids), finish_reason="eos", extra={})
    stop_out = SimpleNamespace(text="Answer: 4\n\n", token_ids=ids + [10], finish_reason="stop", stop_reason="\n\n")
    sample = to_sample(stop_out, tiny_tokenizer, params)
    assert (sample.text, sample.finish_reason) == ("Answer: 4\n\n", "stop")
    long_out = SimpleNamespace(text="Answer", token_ids=ids[:6], finish_reason="length", stop_reason=None)
    assert to_sample(long_out, tiny_tokenizer, params).finish_reason == "length"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_vllm_a_clear_error():
    assert not is_available()
    with pytest.raises(ImportError, match="ratchet\\[vllm\\]"):
        VLLMSampler("smollm2-135m")


def test_a_shard_draws_the_seeds_of_its_prompts_places_in_the_stage(stand_in_vllm, tiny_model_dir):
    # The stand-in's completions follow each request's seed, as vLLM's seeded sampling does: a shard
    # given first_index=2 must seed prompts 2.. as the whole call seeds them, or its samples differ.
    import json

    prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(5)]
    params = SamplingParams(k=3, temperature=0.8, max_new_tokens=8, seed=4)
    sampler = VLLMSampler(str(tiny_model_dir))
    whole = sampler.sample(prompts, params)
    assert sampler.sample(prompts[2:], params, first_index=2) == whole[2:]
    assert sampler.sample(prompts[2:], params) != whole[2:]  # seeded as prompts 0.. instead: other samples
    calls = [json.loads(line) for line in stand_in_vllm.read_text().splitlines()]
    assert [c["seeds"] for c in calls if c["event"] == "generate"][:2] == [
        [prompt_seed(4, i) for i in range(5)], [prompt_seed(4, i) for i in range(2, 5)]]
