"""End of turn: every sampler stops on the token the chat template ends an assistant turn with and
on the model's generation-config EOS ids, not only on the tokenizer's EOS; training appends that
token to a finished completion; a tokenizer without a chat template gets a plain prompt format.

The tokenizer here is the tests' byte-level one with a Gemma-like twist: turns end with a special
``<end_of_turn>`` token, while its EOS stays <|im_end|>.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from conftest import CHAT_TEMPLATE, make_model, make_tokenizer
from transformers import GenerationConfig

from ratchet.data import chat
from ratchet.data.tokenize import completion_ids, prompt_ids
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.generate.hf import HFSampler
from ratchet.generate.stops import end_of_turn_token, stop_token_ids
from ratchet.generate.vllm import to_sample, vllm_kwargs

SAMPLERS = [CachedSampler, HFSampler]
PROMPT = [[{"role": "user", "content": "hi"}]]
GREEDY = SamplingParams(k=1, temperature=0.0, max_new_tokens=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def turn_tokenizer():
    """Turns end with <end_of_turn>; EOS is <|im_end|>, a different token."""
    tok = make_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    tok.chat_template = CHAT_TEMPLATE.replace("<|im_end|>", "<end_of_turn>")
    return tok


@pytest.fixture
def turn():
    tok = turn_tokenizer()
    return make_model(len(tok)), tok


@contextmanager
def forced(model, token: int, step: int):
    """The model's forward call number ``step`` (0 is the prefill, which gives the first new token)
    puts all its weight on ``token``: a scripted end of turn at new token ``step + 1``."""
    calls = []

    def hook(module, args, kwargs, output):
        if len(calls) == step:
            output.logits[:, -1, token] = output.logits.abs().max() * 2 + 100
        calls.append(step)
        return output

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def test_end_of_turn_token_is_read_from_the_template(turn, tiny_tokenizer):
    _, tok = turn
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_token(tok) == eot != tok.eos_token_id
    # SmolLM2's template ends turns with <|im_end|>, its EOS.
    assert end_of_turn_token(tiny_tokenizer) == tiny_tokenizer.eos_token_id
    plain = make_tokenizer()
    plain.chat_template = None
    assert end_of_turn_token(plain) is None


def test_stop_token_ids_join_tokenizer_template_and_generation_config(turn):
    model, tok = turn
    eos, eot = tok.eos_token_id, end_of_turn_token(tok)
    assert stop_token_ids(tok) == tuple(sorted({eos, eot}))
    model.generation_config.eos_token_id = [7, eos]  # a list, as Qwen2.5-Instruct's
    assert stop_token_ids(tok, model) == tuple(sorted({7, eos, eot}))
    model.generation_config.eos_token_id = 9  # an int
    assert stop_token_ids(tok, model) == tuple(sorted({9, eos, eot}))
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=[5, 6])) == tuple(sorted({5, 6, eos, eot}))
    assert stop_token_ids(tok, SimpleNamespace()) == tuple(sorted({eos, eot}))  # no generation_config


def test_stop_token_ids_through_a_peft_wrapper(turn):
    from peft import LoraConfig, get_peft_model

    model, tok = turn
    model.generation_config.eos_token_id = [7]
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    assert 7 in stop_token_ids(tok, wrapped)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("source", ["template", "generation_config"])
def test_every_sampler_stops_on_the_end_of_turn(turn, sampler, source):
    model, tok = turn
    if source == "template":
        token = end_of_turn_token(tok)
    else:  # an id only the model's generation config names
        token = 100
        model.generation_config.eos_token_id = [tok.eos_token_id, token]
    free = sampler(model, tok, progress=False).sample(PROMPT, GREEDY)[0][0]
    assert free.finish_reason == "length", "the unscripted model should run to the length limit"
    with forced(model, token, step=2):
        sample = sampler(model, tok, progress=False).sample(PROMPT, GREEDY)[0][0]
    assert (sample.finish_reason, sample.num_tokens) == ("eos", 2)
    first_two = tok(free.text, add_special_tokens=False)["input_ids"][:2]
    assert sample.text == tok.decode(first_two, skip_special_tokens=True)
    assert "<end_of_turn>" not in sample.text


def test_samplers_agree_on_an_end_of_turn_in_a_batch(turn):
    """Rows of several prompts, the end of turn at different steps per forward call."""
    model, tok = turn
    prompts = [[{"role": "user", "content": text}] for text in ["hi", "a longer question here"]]
    params = SamplingParams(k=2, temperature=1.0, top_p=1e-9, max_new_tokens=8)
    eot = end_of_turn_token(tok)
    results = []
    for sampler in SAMPLERS:
        with forced(model, eot, step=3):
            out = sampler(model, tok, batch_size=8, progress=False).sample(prompts, params)
        results.append([[(s.text, s.num_tokens, s.finish_reason) for s in row] for row in out])
    assert results[0] == results[1]
    assert all(s[1:] == (3, "eos") for row in results[0] for s in row)


def test_vllm_is_given_the_stop_ids_and_does_not_count_them(turn):
    """vLLM keeps a stop token in ``token_ids`` (not in the text) and names it in ``stop_reason``."""
    _, tok = turn
    stops, eot = stop_token_ids(tok), end_of_turn_token(tok)
    assert vllm_kwargs(SamplingParams(), 0, stops)["stop_token_ids"] == list(stops)
    ids = tok("Answer: 4", add_special_tokens=False)["input_ids"]
    out = SimpleNamespace(text="Answer: 4", token_ids=ids + [eot], finish_reason="stop", stop_reason=eot)
    sample = to_sample(out, tok, SamplingParams())
    assert (sample.text, sample.num_tokens, sample.finish_reason) == ("Answer: 4", len(ids), "eos")


def test_completion_closes_with_the_template_token(turn, tiny_tokenizer):
    _, tok = turn
    eot = end_of_turn_token(tok)
    assert completion_ids(tok, "Answer: 4", complete=True)[-1] == eot
    assert eot not in completion_ids(tok, "Answer: 4", complete=False)
    assert completion_ids(tiny_tokenizer, "Answer: 4", complete=True)[-1] == tiny_tokenizer.eos_token_id
    # Prompt + completion is exactly what the template renders for the whole conversation.
    messages = [{"role": "user", "content": "2+2?"}]
    whole = tok.apply_chat_template(messages + [{"role": "assistant", "content": "Answer: 4"}], tokenize=False)
    ids = prompt_ids(tok, messages) + completion_ids(tok, "Answer: 4", complete=True)
    assert tok.decode(ids) == whole.removesuffix("\n")


def test_without_a_chat_template_a_plain_format_and_one_warning(monkeypatch):
    tok = make_tokenizer()
    tok.chat_template = None
    model = make_model(len(tok))
    monkeypatch.setattr(chat, "_warned_plain_format", False)
    params = SamplingParams(k=2, temperature=1.0, max_new_tokens=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = prompt_ids(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        outs = [sampler(model, tok, progress=False).sample(PROMPT, params) for sampler in SAMPLERS]
        assert completion_ids(tok, "x", complete=True)[-1] == tok.eos_token_id
    assert tok.decode(ids) == "<|im_start|>System: Be brief.\n\nUser: hi\n\nAssistant:"
    assert all(len(out[0]) == 2 for out in outs)
    notes = [w for w in caught if "no chat template" in str(w.message)]
    assert len(notes) == 1 and len(caught) == len(notes), [str(w.message) for w in caught]
