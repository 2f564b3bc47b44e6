"""``CachedSampler``: determinism, parity with ``model.generate``, stop strings, EOS, errors, row dropping."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from ratchet.data.tokenize import prompt_ids
from ratchet.generate import engine
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler, SlotCache, sample_tokens
from ratchet.generate.hf import HFSampler

PROMPTS = [[{"role": "user", "content": text}] for text in
           ["hi", "What is 2 + 2? Think step by step.", "Name three colours.", "ok " * 12]]
# top_p this small keeps only the most likely token: greedy decoding, while k > 1 stays allowed.
GREEDY_K3 = SamplingParams(k=3, temperature=1.0, top_p=1e-9, max_new_tokens=24)


@pytest.fixture
def varied(tiny):
    """The tiny model with weights drawn wide enough that greedy text varies (the default init
    repeats one token forever)."""
    model, tokenizer = tiny
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model, tokenizer


def generate_alone(model, tokenizer, messages, max_new_tokens, eos=None):
    """Greedy ``model.generate`` on one prompt, cut before EOS: the reference output."""
    eos = tokenizer.eos_token_id if eos is None else eos
    ids = torch.tensor([prompt_ids(tokenizer, messages)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    return out[:out.index(eos)] if eos in out else out


def test_shared_cache_matches_generate_on_each_prompt_alone(varied):
    model, tokenizer = varied
    out = CachedSampler(model, tokenizer, batch_size=12, progress=False).sample(PROMPTS, GREEDY_K3)
    for messages, samples in zip(PROMPTS, out):
        reference = tokenizer.decode(generate_alone(model, tokenizer, messages, 24), skip_special_tokens=True)
        assert len(samples) == 3
        assert [s.text for s in samples] == [reference] * 3
        assert all(s.finish_reason == "length" and s.num_tokens == 24 for s in samples)


def test_temperature_zero_matches_generate(varied):
    model, tokenizer = varied
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=16)
    out = CachedSampler(model, tokenizer, batch_size=2, progress=False).sample(PROMPTS, params)
    for messages, (sample,) in zip(PROMPTS, out):
        assert sample.text == tokenizer.decode(generate_alone(model, tokenizer, messages, 16), skip_special_tokens=True)


def test_same_seed_same_completions_whatever_the_batching(varied):
    model, tokenizer = varied
    params = SamplingParams(k=4, temperature=1.0, max_new_tokens=20, seed=7)
    first = CachedSampler(model, tokenizer, batch_size=16, progress=False).sample(PROMPTS, params)
    again = CachedSampler(model, tokenizer, batch_size=16, progress=False).sample(PROMPTS, params)
    rebatched = CachedSampler(model, tokenizer, batch_size=4, progress=False).sample(PROMPTS, params)
    other_seed = CachedSampler(model, tokenizer, batch_size=16, progress=False).sample(
        PROMPTS, SamplingParams(k=4, temperature=1.0, max_new_tokens=20, seed=8))
    texts = [[s.text for s in samples] for samples in first]
    assert texts == [[s.text for s in samples] for samples in again]
    assert texts == [[s.text for s in samples] for samples in rebatched]
    assert texts != [[s.text for s in samples] for samples in other_seed]
    assert all(len(set(t)) > 1 for t in texts), "the k samples of a prompt should differ"


def test_stop_string_cuts_and_matches_hf_sampler(varied):
    model, tokenizer = varied
    free = CachedSampler(model, tokenizer, progress=False).sample(
        PROMPTS[:1], SamplingParams(k=1, temperature=0.0, max_new_tokens=24))[0][0].text
    stop = next(free[i:i + 2] for i in range(4, len(free) - 2) if free[i:i + 2].isascii())
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=24, stop=(stop, "never-there"))
    ours = CachedSampler(model, tokenizer, progress=False).sample(PROMPTS[:1], params)[0][0]
    hf = HFSampler(model, tokenizer, progress=False).sample(PROMPTS[:1], params)[0][0]
    assert ours.text == free[:free.index(stop) + len(stop)]
    assert ours.finish_reason == "stop" and ours.num_tokens < 24
    assert (ours.text, ours.num_tokens, ours.finish_reason) == (hf.text, hf.num_tokens, hf.finish_reason)


def test_eos_ends_a_completion_before_the_eos_token(varied):
    model, tokenizer = varied
    sampler = CachedSampler(model, tokenizer, batch_size=8, progress=False)
    first = generate_alone(model, tokenizer, PROMPTS[1], 24)
    sampler.eos = first[5]  # a token the model emits: it stands in for EOS here
    sample = sampler.sample(PROMPTS[1:2], GREEDY_K3)[0][0]
    expected = generate_alone(model, tokenizer, PROMPTS[1], 24, eos=first[5])
    assert (sample.finish_reason, sample.num_tokens) == ("eos", len(expected))
    assert sample.text == tokenizer.decode(expected, skip_special_tokens=True)


def test_finished_rows_leave_the_batch(varied):
    model, tokenizer = varied
    rows = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        params = SamplingParams(k=4, temperature=1.5, max_new_tokens=30, stop=("a", "e", "o"), seed=1)
        out = CachedSampler(model, tokenizer, batch_size=16, progress=False).sample(PROMPTS, params)
    finally:
        hook.remove()
    assert rows[0] == len(PROMPTS)  # one prefill per prompt, not one per sample
    decode = rows[1:]  # one forward per token, over the rows still running
    assert decode[0] <= len(PROMPTS) * 4 and decode[-1] < decode[0]
    assert decode == sorted(decode, reverse=True)
    reasons = {s.finish_reason for samples in out for s in samples}
    assert "stop" in reasons and len(decode) < 29


def test_empty_prompt_list(tiny):
    model, tokenizer = tiny
    assert CachedSampler(model, tokenizer, progress=False).sample([], SamplingParams(k=4)) == []


def test_prompt_longer_than_context_is_named(tiny):
    model, tokenizer = tiny
    prompts = [[{"role": "user", "content": "short"}], [{"role": "user", "content": "far too long " * 60}]]
    with pytest.raises(ValueError, match=r"prompt 1 \('far too long.*exceeds the model's context of 512"):
        CachedSampler(model, tokenizer, progress=False).sample(prompts, SamplingParams(k=2, max_new_tokens=32))


def test_sampling_follows_the_distribution_and_top_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4)
    generators = [torch.Generator().manual_seed(i) for i in range(4000)]
    counts = torch.bincount(sample_tokens(logits, SamplingParams(temperature=1.0), generators), minlength=4)
    assert torch.allclose(counts / 4000, probs, atol=0.03)
    nucleus = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7), generators)
    assert set(nucleus.tolist()) == {0, 1}
    assert abs((nucleus == 0).float().mean().item() - 0.5 / 0.8) < 0.03


def test_nucleus_shortcut_equals_full_sort():
    probs = torch.softmax(torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    for top_p in (0.05, 0.5, 0.99):
        short, short_order = engine._nucleus(probs, top_p, candidates=40)
        full, full_order = engine._nucleus(probs, top_p, candidates=300)
        assert torch.equal(short, full[:, :short.shape[1]]) or torch.equal(short, full)
        kept = short.count_nonzero(-1)
        for row in range(5):
            assert set(short_order[row, :kept[row]].tolist()) == set(full_order[row, :kept[row]].tolist())


def test_drop_rows_same_for_slot_and_dynamic_cache():
    keys = torch.randn(3, 2, 5, 4)
    slot, dynamic = DynamicCache(), DynamicCache()
    for cache in (slot, dynamic):
        cache.update(keys, keys + 1, layer_idx=0)
    slot = SlotCache(slot, repeats=2, capacity=8)
    dynamic.batch_repeat_interleave(2)
    done = [False, True, True, False, False, True]
    assert engine._drop_rows(slot, done) == engine._drop_rows(dynamic, done) == [0, 4, 3]
    assert torch.equal(slot.layers[0].keys, dynamic.layers[0].keys)
    assert torch.equal(slot.layers[0].values, dynamic.layers[0].values)
    slot.update(keys[:3, :, :1], keys[:3, :, :1], layer_idx=0)
    assert slot.get_seq_length() == 6 and slot.layers[0].keys.shape == (3, 2, 6, 4)
