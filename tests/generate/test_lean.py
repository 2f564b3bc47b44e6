"""``generate.lean``: the lean decode step computes what the model's forward computes, and steps aside
for models it does not know; ``CachedSampler`` fills every free row and counts its work."""

from __future__ import annotations

import pytest
import torch

from ratchet.data.tokenize import prompt_ids
from ratchet.generate import engine
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.generate.lean import LeanStep, why_not_lean

PROMPTS = [[{"role": "user", "content": text}] for text in
           ["hi", "What is 2 + 2? Think step by step.", "Name three colours.", "ok " * 12]]


pytestmark = pytest.mark.usefixtures("one_thread")


def _widen(model, seed: int = 0):
    """Weights (and biases) drawn wide enough that greedy text varies."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(params=["llama", "qwen2"])
def models(request, tiny):
    """The tiny Llama, and a tiny Qwen2 (q, k, v biases, untied head) on the same tokenizer."""
    model, tokenizer = tiny
    if request.param == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(vocab_size=model.config.vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=2, eos_token_id=2)
        model = Qwen2ForCausalLM(config)
    return _widen(model), tokenizer


def _left_padded(tokenizer, pad: int):
    ids = [prompt_ids(tokenizer, m) for m in PROMPTS]
    width = max(map(len, ids))
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp_(min=0)


def test_prefill_and_decode_match_the_models_forward(models):
    """Logits of the prefill and of five decode steps, and the cached keys and values, within 1e-5
    of the model's own forward on the same left-padded batch and the same cache layout."""
    model, tokenizer = models
    assert why_not_lean(model) is None
    lean = LeanStep(model)
    lean.pack()
    input_ids, mask, positions = _left_padded(tokenizer, tokenizer.pad_token_id)
    sampler = CachedSampler(model, tokenizer, progress=False)
    batches = []
    with torch.inference_mode():
        for step in (None, lean):
            cache, prompt_mask, logits = sampler._prefill([prompt_ids(tokenizer, m) for m in PROMPTS], step)
            batch = engine._Batch(8, input_ids.shape[1] + 10, input_ids.shape[1], 2, seed=0)
            batch.admit([(r, r, j) for r in range(len(PROMPTS)) for j in range(2)], cache, prompt_mask, logits)
            batches.append((batch, step))
        (reference, _), (ours, _) = batches
        assert torch.allclose(ours.logits, reference.logits, atol=1e-5)
        real = mask.bool().repeat_interleave(2, 0)  # padded positions hold garbage in both: not compared
        for a, b in zip(ours.cache.layers, reference.cache.layers):
            for x, y in ((a.keys, b.keys), (a.values, b.values)):  # [rows, heads, width, dim]
                assert torch.allclose(x.transpose(1, 2)[real], y.transpose(1, 2)[real], atol=1e-5)
        for _ in range(5):
            tokens = reference.logits.argmax(-1)
            for batch, step in batches:
                batch.forward(model, tokens, sampler.cache_kw, step)
            assert torch.allclose(ours.logits, reference.logits, atol=1e-5)


def test_sampler_gives_the_same_completions_with_and_without_the_lean_step(models):
    model, tokenizer = models
    params = SamplingParams(k=3, temperature=1.0, max_new_tokens=20, seed=3, stop=("a",))
    lean = CachedSampler(model, tokenizer, batch_size=5, progress=False).sample(PROMPTS, params)
    forward = CachedSampler(model, tokenizer, batch_size=5, progress=False, lean=False).sample(PROMPTS, params)
    assert [[(s.text, s.finish_reason) for s in row] for row in lean] == \
        [[(s.text, s.finish_reason) for s in row] for row in forward]


def test_models_it_does_not_know_run_their_own_forward(tiny):
    from peft import LoraConfig, get_peft_model
    model, tokenizer = tiny
    assert why_not_lean(model) is None
    hook = model.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    assert "hooks" in why_not_lean(model)
    hook.remove()
    assert "not one of" in why_not_lean(torch.nn.Linear(2, 2))
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    assert why_not_lean(wrapped) is not None
    assert CachedSampler(wrapped, tokenizer, progress=False)._lean() is None


def test_weights_changed_in_place_are_packed_again(tiny):
    """An optimizer step between two ``sample`` calls changes weights in place: the lean step must
    follow, as the model's forward does."""
    model, tokenizer = _widen(tiny[0]), tiny[1]
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=12)
    sampler = CachedSampler(model, tokenizer, progress=False)
    before = sampler.sample(PROMPTS, params)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
    after = sampler.sample(PROMPTS, params)
    assert after == CachedSampler(model, tokenizer, progress=False, lean=False).sample(PROMPTS, params)
    assert after != before
    # The trainer's optimizer (fused AdamW) updates weights without bumping their version counters.
    weight = model.model.layers[0].mlp.down_proj.weight
    version = weight._version
    weight.grad = torch.ones_like(weight)
    torch.optim.AdamW([weight], lr=1.0, fused=True).step()
    assert weight._version == version  # why the lean step packs at every call instead of checking
    stepped = sampler.sample(PROMPTS, params)
    assert stepped == CachedSampler(model, tokenizer, progress=False, lean=False).sample(PROMPTS, params)
    assert stepped != after


def test_free_rows_take_single_samples_of_the_next_prompt(tiny):
    """batch_size 5, k 3: rows are filled by samples, not whole prompts, so steps run 5 rows (a
    prompt-at-a-time refill would run at most 3), and greedy text still matches each prompt alone."""
    model, tokenizer = _widen(tiny[0]), tiny[1]
    steps = []
    original = engine._Batch.forward

    def counting(batch, *args, **kwargs):
        steps.append(len(batch))
        return original(batch, *args, **kwargs)

    greedy = SamplingParams(k=3, temperature=1.0, top_p=1e-9, max_new_tokens=10)
    engine._Batch.forward = counting
    try:
        out = CachedSampler(model, tokenizer, batch_size=5, progress=False).sample(PROMPTS, greedy)
    finally:
        engine._Batch.forward = original
    assert max(steps) == 5
    alone = [CachedSampler(model, tokenizer, batch_size=1, progress=False).sample([m], greedy)[0] for m in PROMPTS]
    assert [[s.text for s in row] for row in out] == [[s.text for s in row] for row in alone]


def test_work_counts_every_position_once_with_its_context(tiny):
    """k=1, 4 new tokens, no stop: each prompt of L tokens is prefilled once (contexts 1..L), then
    decoded 3 times (the 4th token is sampled, never fed back) at contexts L+1, L+2, L+3."""
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    sampler = CachedSampler(model, tokenizer, progress=False)
    sampler.stop_ids = frozenset()  # the random model may emit EOS: every row runs to the length cap
    out = sampler.sample(PROMPTS, SamplingParams(k=1, temperature=0.0, max_new_tokens=4))
    assert all(s.finish_reason == "length" for (s,) in out) and eos is not None
    lengths = [len(prompt_ids(tokenizer, m)) for m in PROMPTS]
    positions = sum(lengths) + 3 * len(lengths)
    contexts = sum(n * (n + 1) // 2 + 3 * n + 6 for n in lengths)
    assert sampler.work.positions == positions
    assert sampler.work.mean_context == pytest.approx(contexts / positions)


def _logits_per_sample(sampler, prompts, params, first_index=0) -> dict:
    """Each sample's next-token logits at every step of a ``sample`` call, keyed by the seed of its
    own generator (one per (seed, prompt index, sample index))."""
    seen: dict[int, list[torch.Tensor]] = {}
    original = engine.sample_tokens

    def spy(logits, params, generators, *args):
        for row, generator in zip(logits, generators):
            seen.setdefault(generator.initial_seed(), []).append(row.clone())
        return original(logits, params, generators, *args)

    engine.sample_tokens = spy
    try:
        sampler.sample(prompts, params, first_index=first_index)
    finally:
        engine.sample_tokens = original
    return seen


def _skip_unless_rows_keep_their_bits(model) -> None:
    """The property of the BLAS the sampler's exactness rests on: a row of a matrix product gets
    the same bits at any number of rows >= 2 (MKL, one thread, measured for SmolLM2's products)."""
    lean = LeanStep(model)
    lean.pack()
    x = torch.randn(7, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    weight = lean.layers[0]["qkv"][0]
    if not all(torch.equal(x[:m] @ weight, (x @ weight)[:m]) for m in range(2, 7)):
        pytest.skip("this machine's BLAS gives a row other bits at another number of rows")


def test_a_samples_logits_do_not_depend_on_the_rows_it_shares_steps_with(models):
    """What makes a stage sharded over workers sample what one process samples (``executor: ray``):
    every sample's logits at every step are the same bits when its prompt is sampled with all the
    others in batches of 7 rows, or in a shard of two prompts in batches of 4 (other prompts
    prefilled with it, other rows in its steps, other window widths, steps of one row at the end)."""
    model, tokenizer = models
    _skip_unless_rows_keep_their_bits(model)
    prompts = PROMPTS + [[{"role": "user", "content": "Count to five."}]]
    params = SamplingParams(k=3, temperature=1.0, max_new_tokens=12, seed=5)
    whole = _logits_per_sample(CachedSampler(model, tokenizer, batch_size=7, progress=False), prompts, params)
    shards = {}
    for first in range(0, len(prompts), 2):
        shards |= _logits_per_sample(CachedSampler(model, tokenizer, batch_size=4, progress=False),
                                     prompts[first:first + 2], params, first_index=first)
    assert len(whole) == len(prompts) * params.k and shards.keys() == whole.keys()
    for key, steps in whole.items():
        assert len(steps) == len(shards[key])
        assert all(torch.equal(a, b) for a, b in zip(steps, shards[key]))
