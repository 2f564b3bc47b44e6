"""``CachedSampler``: determinism, parity with ``model.generate``, stop strings, EOS, errors, row dropping."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from ratchet.data.tokenize import prompt_ids
from ratchet.generate import engine
from ratchet.generate.base import PromptTooLongError, SamplingParams
from ratchet.generate.engine import CachedSampler, SlotCache, drop_rows, sample_tokens
from ratchet.generate.hf import HFSampler

PROMPTS = [[{"role": "user", "content": text}] for text in
           ["hi", "What is 2 + 2? Think step by step.", "Name three colours.", "ok " * 12]]
# top_p this small keeps only the most likely token: greedy decoding, while k > 1 stays allowed.
GREEDY_K3 = SamplingParams(k=3, temperature=1.0, top_p=1e-9, max_new_tokens=24)


pytestmark = pytest.mark.usefixtures("one_thread")


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


def printable_pair(text: str, start: int) -> str:
    """Two printable ASCII characters of ``text`` from ``start`` on: a stop string the random
    byte-level model really produces (its text also holds invalid UTF-8, decoded as U+FFFD)."""
    return next(text[i:i + 2] for i in range(start, len(text) - 1)
                if text[i:i + 2].isascii() and text[i:i + 2].isprintable())


@pytest.mark.parametrize("batch_size", [12, 3])  # all prompts at once; one at a time, reusing rows
def test_shared_cache_matches_generate_on_each_prompt_alone(varied, batch_size):
    model, tokenizer = varied
    out = CachedSampler(model, tokenizer, batch_size=batch_size, progress=False).sample(PROMPTS, GREEDY_K3)
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


def test_a_shard_with_its_first_index_gives_the_wholes_samples(varied):
    """Ray workers sample contiguous shards of a stage's prompts (loop.executor): prompt i of a
    shard starting at ``first_index`` draws as prompt first_index + i of the whole."""
    model, tokenizer = varied
    params = SamplingParams(k=3, temperature=1.0, max_new_tokens=12, seed=5)
    sampler = CachedSampler(model, tokenizer, batch_size=6, progress=False)
    whole = [[s.text for s in samples] for samples in sampler.sample(PROMPTS, params)]
    shards = [[s.text for s in samples] for start in (0, 2) for samples in
              sampler.sample(PROMPTS[start:start + 2], params, first_index=start)]
    unshifted = [[s.text for s in samples] for samples in sampler.sample(PROMPTS[2:], params)]
    assert shards == whole[:4] and len(PROMPTS) >= 4
    assert unshifted != whole[2:]  # without the index the shard would repeat prompt 0's draws


def test_stop_string_cuts_and_matches_hf_sampler(varied):
    model, tokenizer = varied
    free = CachedSampler(model, tokenizer, progress=False).sample(
        PROMPTS[:1], SamplingParams(k=1, temperature=0.0, max_new_tokens=24))[0][0].text
    stop = printable_pair(free, 4)
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=24, stop=(stop, "never-there"))
    ours = CachedSampler(model, tokenizer, progress=False).sample(PROMPTS[:1], params)[0][0]
    hf = HFSampler(model, tokenizer, progress=False).sample(PROMPTS[:1], params)[0][0]
    assert ours.text == free[:free.index(stop) + len(stop)]
    assert ours.finish_reason == "stop" and ours.num_tokens < 24
    assert (ours.text, ours.num_tokens, ours.finish_reason) == (hf.text, hf.num_tokens, hf.finish_reason)


def test_rows_refilled_as_they_finish_match_hf_alone(varied):
    """Stops finish rows at different steps; freed rows take the next prompt mid-flight."""
    model, tokenizer = varied
    free = CachedSampler(model, tokenizer, progress=False).sample(
        PROMPTS, SamplingParams(k=1, temperature=0.0, max_new_tokens=24))
    stops = tuple(printable_pair(samples[0].text, 3 + 4 * n) for n, samples in enumerate(free))
    greedy = SamplingParams(k=2, temperature=1.0, top_p=1e-9, max_new_tokens=24, stop=stops)
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        ours = CachedSampler(model, tokenizer, batch_size=4, progress=False).sample(PROMPTS, greedy)
    finally:
        hook.remove()
    alone = HFSampler(model, tokenizer, batch_size=1, progress=False).sample(
        PROMPTS, SamplingParams(k=1, temperature=0.0, max_new_tokens=24, stop=stops))
    for samples, (reference,) in zip(ours, alone):
        assert [(s.text, s.num_tokens, s.finish_reason) for s in samples] == \
            [(reference.text, reference.num_tokens, reference.finish_reason)] * 2
    assert len({s.num_tokens for samples in ours for s in samples}) > 1
    assert {s.finish_reason for samples in ours for s in samples} >= {"stop"}
    prefills = [n for n, shape in enumerate(calls) if shape[1] > 1]
    assert len(prefills) >= 2 and prefills[1] > 1, "a later prompt should join after decoding began"
    # Each prefill takes a batch's worth of prompts (4 rows / k 2), not one prompt per freed row.
    assert [calls[n][0] for n in prefills] == [2, 2]


def test_eos_ends_a_completion_before_the_eos_token(varied):
    model, tokenizer = varied
    sampler = CachedSampler(model, tokenizer, batch_size=8, progress=False)
    first = generate_alone(model, tokenizer, PROMPTS[1], 24)
    sampler.stop_ids = {first[5]}  # a token the model emits: it stands in for EOS here
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
    assert "stop" in reasons


def test_empty_prompt_list(tiny):
    model, tokenizer = tiny
    assert CachedSampler(model, tokenizer, progress=False).sample([], SamplingParams(k=4)) == []


@pytest.mark.parametrize("sampler", [CachedSampler, HFSampler])
def test_prompt_longer_than_context_is_named(tiny, sampler):
    model, tokenizer = tiny
    prompts = [[{"role": "user", "content": "short"}], [{"role": "user", "content": "far too long " * 60}]]
    with pytest.raises(PromptTooLongError, match=r"prompt 1 \('far too long.*exceeds the model's context of 512") as e:
        sampler(model, tokenizer, progress=False).sample(prompts, SamplingParams(k=2, max_new_tokens=32))
    assert e.value.index == 1


def test_sampling_follows_the_distribution_and_top_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4)
    generators = [torch.Generator().manual_seed(i) for i in range(4000)]
    counts = torch.bincount(sample_tokens(logits, SamplingParams(temperature=1.0), generators), minlength=4)
    assert torch.allclose(counts / 4000, probs, atol=0.03)
    nucleus = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7), generators)
    assert set(nucleus.tolist()) == {0, 1}
    assert abs((nucleus == 0).float().mean().item() - 0.5 / 0.8) < 0.03


def test_invert_cdf_matches_a_full_float64_cumsum_and_skips_zeros():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(6, 1000, generator=generator) * 4, dim=-1)
    probs[:, ::3] = 0  # zero-probability tokens, as top-p leaves them; 1000 is not a multiple of 256
    u = torch.rand(200, dtype=torch.float64, generator=generator)
    edges = torch.tensor([0.0, 1e-300, 1 - 1e-16], dtype=torch.float64)  # where rounding bites
    for row in range(6):
        rows = probs[row].expand(len(u), -1)
        cdf = rows.double().cumsum(-1)
        expected = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
        assert torch.equal(engine.invert_cdf(rows, u, block=256), expected)
        picked = engine.invert_cdf(probs[row].expand(3, -1), edges, block=256)
        assert bool((probs[row, picked] > 0).all()) and picked[-1] == 998


def test_nucleus_shortcut_equals_full_sort():
    probs = torch.softmax(torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    for top_p in (0.05, 0.5, 0.99):
        short, short_order = engine._nucleus(probs, top_p, candidates=40)
        full, full_order = engine._nucleus(probs, top_p, candidates=300)
        assert torch.equal(short, full[:, :short.shape[1]]) or torch.equal(short, full)
        kept = short.count_nonzero(-1)
        for row in range(5):
            assert set(short_order[row, :kept[row]].tolist()) == set(full_order[row, :kept[row]].tolist())


def test_slot_cache_admits_drops_and_moves_its_window():
    first = DynamicCache()  # two prompts of 5 positions; a key's value names it
    first.update(torch.arange(10.0).view(2, 1, 5, 1), torch.zeros(2, 1, 5, 1), layer_idx=0)
    cache = SlotCache(first, rows=6, capacity=9, origin=5)
    cache.admit(first, repeats=2)  # rows 0-3 hold prompts 0, 0, 1, 1 at positions 0-4
    assert cache.window == (0, 5) and cache.used == 4
    cache.update(torch.full((4, 1, 1, 1), 100.0), torch.zeros(4, 1, 1, 1), layer_idx=0)
    second = DynamicCache()  # a 3-position prompt joins later: positions 3-5, ending with the others
    second.update(torch.full((1, 1, 3, 1), 7.0), torch.zeros(1, 1, 3, 1), layer_idx=0)
    cache.admit(second, repeats=2)
    assert cache.window == (0, 6) and cache.used == 6
    # Rows 0 and 2 finish, row 5 too: the live rows 3 and 4 move into the holes 0 and 2.
    assert drop_rows(cache, [True, False, True, False, False, True]) == [3, 1, 4]
    cache.crop_front(3)
    keys = cache.layers[0].keys[:, 0, :, 0].tolist()
    assert keys == [[8, 9, 100], [3, 4, 100], [7, 7, 7]]
    for _ in range(3):  # the third append reaches the buffer's end: the window moves back
        cache.make_room()
        cache.update(torch.full((3, 1, 1, 1), 9.0), torch.zeros(3, 1, 1, 1), layer_idx=0)
    cache.make_room()
    assert cache.window == (0, 6) and cache.get_seq_length() == 6
    keys = cache.layers[0].keys[:, 0, :, 0].tolist()
    assert keys == [[8, 9, 100, 9, 9, 9], [3, 4, 100, 9, 9, 9], [7, 7, 7, 9, 9, 9]]


def test_sliding_window_models_are_refused_clearly():
    from transformers.cache_utils import DynamicSlidingWindowLayer

    cache = DynamicCache()
    cache.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    cache.update(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), layer_idx=0)
    with pytest.raises(NotImplementedError, match="use HFSampler"):
        SlotCache(cache, rows=2, capacity=8, origin=3)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "lora"])
def test_cache_goes_under_the_name_forward_takes(varied, wrap):
    """transformers 5.24 renamed forward's ``past_key_values`` to ``cache`` (the old name warns and
    goes in 5.40); the sampler must use the current name, also through a PEFT wrapper, and a
    zero-initialised LoRA adapter must not change what it samples."""
    import warnings

    from peft import LoraConfig, get_peft_model

    model, tokenizer = varied
    expected = CachedSampler(model, tokenizer, batch_size=6, progress=False).sample(PROMPTS[:2], GREEDY_K3)
    if wrap:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.* is deprecated")
        got = CachedSampler(model, tokenizer, batch_size=6, progress=False).sample(PROMPTS[:2], GREEDY_K3)
    assert [[s.text for s in row] for row in got] == [[s.text for s in row] for row in expected]


def test_slot_cache_window_never_shows_unwritten_memory():
    """The buffer is not zero-filled up front: every column that enters a row's window unwritten
    (before a later, shorter prompt; in front, when a longer prompt widens the window) is zeroed,
    since masked positions still enter attention with weight 0, and 0 x NaN = NaN."""
    def prefill(prompts: int, width: int) -> DynamicCache:
        cache = DynamicCache()
        cache.update(torch.ones(prompts, 1, width, 1), torch.ones(prompts, 1, width, 1), layer_idx=0)
        return cache

    cache = SlotCache(prefill(2, 5), rows=8, capacity=12, origin=5)
    cache.layers[0]._k.fill_(float("nan"))  # stands in for whatever the allocator hands out
    cache.layers[0]._v.fill_(float("nan"))
    cache.admit(prefill(2, 5), repeats=1)
    cache.update(torch.ones(2, 1, 1, 1), torch.ones(2, 1, 1, 1), layer_idx=0)
    cache.admit(prefill(1, 2), repeats=2)  # rows 2, 3: only their last 2 of 6 columns written
    cache.crop_front(3)
    cache.admit(prefill(1, 5), repeats=2)  # the window grows back to column 1 for rows 0-3
    layer = cache.layers[0]
    assert cache.window == (1, 6) and cache.used == 6
    assert not layer.keys.isnan().any() and not layer.values.isnan().any()
    assert layer.keys[2, 0, :, 0].tolist() == [0, 0, 0, 1, 1]


def test_softmax_numerator_is_softmax_unnormalised_and_row_independent():
    logits = torch.randn(9, 300, generator=torch.Generator().manual_seed(1)) * 5
    weights = engine.softmax_numerator(logits, 0.7)
    assert torch.allclose(weights / weights.sum(-1, keepdim=True), torch.softmax(logits / 0.7, -1), atol=1e-7)
    assert torch.equal(weights.amax(-1), torch.ones(9))  # exp(0) at each row's largest logit
    work = engine.weights_buffer(9, 300, "cpu")  # 300 columns rounded up to 512, zero past the vocabulary
    assert work.shape == (9, 512)
    into = engine.softmax_numerator(logits[:4], 0.7, work)
    assert into.shape == (4, 512) and torch.equal(into[:, :300], weights[:4]) and not into[:, 300:].any()
    # a row's weights are the same bits computed alone, in a buffer or with other rows
    assert all(torch.equal(engine.softmax_numerator(logits[r:r + 1], 0.7)[0], weights[r]) for r in range(9))


def test_sampling_with_a_buffer_equals_sampling_without():
    logits = torch.randn(64, 1000, generator=torch.Generator().manual_seed(2)) * 3
    params = SamplingParams(temperature=0.8)

    def draw(work=None):
        generators = [torch.Generator().manual_seed(i) for i in range(64)]
        return sample_tokens(logits, params, generators, work)

    assert torch.equal(draw(engine.weights_buffer(64, 1000, "cpu")), draw())
    # inverse-CDF sampling scales by the row's total: weights x 8 (exact in floats) pick the same tokens
    u = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    weights = engine.softmax_numerator(logits, 0.8)
    assert torch.equal(engine.invert_cdf(weights * 8, u), engine.invert_cdf(weights, u))
