"""Sequence log-probs at completion positions only, and DPO = ln 2 when policy equals reference."""

import math
import os

import torch

from ratchet import logprobs
from ratchet.data.tokenize import prompt_ids, tokenize_completion
from ratchet.logprobs import completion_logps, packed_logps
from ratchet.losses import LOSSES
from ratchet.train.batches import PairExample, collate, pack
from ratchet.train.reference import compute_reference_logps
from ratchet.train.step import pair_loss


def _seqs(tok, n=3):
    out = []
    for i in range(n):
        prompt = prompt_ids(tok, [{"role": "user", "content": f"question {i}" + "?" * i}])
        out.append(tokenize_completion(tok, prompt, f"answer {i} " * (i + 1), complete=i != 1, max_length=200))
    return out


def _naive(model, batch):
    """Full [B, T, V] logits, log-softmax, gather, mask: the textbook computation."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (logp * batch.completion_mask[:, 1:]).sum(-1)


def collate_pairs(examples, pad_id):
    """Chosen then rejected in one batch of 2B sequences (row i chosen of pair i, row B + i its
    rejected), so both go through one forward."""
    return collate([e.chosen for e in examples] + [e.rejected for e in examples], pad_id)


def pair_logps(model, batch):
    """(chosen_logps [B], rejected_logps [B]) from one forward over the 2B stacked sequences."""
    logps = completion_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


def test_completion_logps_match_naive_and_gradients(tiny):
    model, tok = tiny
    batch = collate(_seqs(tok), tok.pad_token_id)
    fast = completion_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask, chunk_size=7)
    slow = _naive(model, batch)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.sum(), model.lm_head.weight)
    (g_slow,) = torch.autograd.grad(slow.sum(), model.lm_head.weight)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-5, rtol=1e-4)


def test_prompt_tokens_do_not_count(tiny):
    model, tok = tiny
    seqs = _seqs(tok, 1)
    batch = collate(seqs, tok.pad_token_id)
    only_prompt = batch.completion_mask.clone().zero_()
    assert completion_logps(model, batch.input_ids, batch.attention_mask, only_prompt).item() == 0.0
    # changing a prompt token changes the log-probs only through context, never by being scored
    assert batch.completion_mask[0, : len(seqs[0].input_ids) - seqs[0].num_completion_tokens].sum() == 0


def test_dpo_is_ln2_when_policy_equals_reference(tiny):
    model, tok = tiny
    s = _seqs(tok, 3)
    examples = [PairExample(1, s[0], s[1]), PairExample(2, s[2], s[0])]
    ref = compute_reference_logps(model, examples, tok.pad_token_id, batch_size=2, progress=False)
    batch = collate_pairs(examples, tok.pad_token_id)
    chosen, rejected = pair_logps(model, batch)
    spec = LOSSES["dpo"]
    out = pair_loss(spec, spec.make_params(beta=0.1), policy_chosen_logps=chosen, policy_rejected_logps=rejected,
                    ref_chosen_logps=ref["ref_chosen_logps"], ref_rejected_logps=ref["ref_rejected_logps"],
                    chosen_lengths=batch.lengths[:2], rejected_lengths=batch.lengths[2:])
    torch.testing.assert_close(out.loss, torch.full((2,), math.log(2)), atol=1e-5, rtol=0)


def test_a_tied_embedding_gets_a_sparse_gradient_and_the_same_total(tiny, monkeypatch):
    """The embedding's own share of a tied weight's gradient is sparse (the rows of the tokens
    present, not a second dense V x H tensor); the weight's total gradient stays dense and equal
    to what the dense embedding gradient gives."""
    model, tok = tiny
    decoder, head = logprobs._decoder_and_head(model)
    ids = torch.tensor([[5, 7, 5, 9]])
    embeds = logprobs._tied_embeddings_sparse_grad(decoder, head, ids)
    (own,) = torch.autograd.grad((embeds * torch.randn_like(embeds)).sum(), head.weight)
    assert own.is_sparse and sorted(set(own.coalesce().indices()[0].tolist())) == [5, 7, 9]
    torch.testing.assert_close(embeds, decoder.embed_tokens(ids), atol=0, rtol=0)
    batch = pack([PairExample(1, *_seqs(tok, 2))], ("chosen", "rejected"), tok.pad_token_id, share_prompt=True)
    sparse = torch.autograd.grad(packed_logps(model, **batch.model_inputs("cpu")).sum(), head.weight)[0]
    monkeypatch.setattr(logprobs, "_plain_trained", lambda weight: False)  # the dense embedding gradient
    dense = torch.autograd.grad(packed_logps(model, **batch.model_inputs("cpu")).sum(), head.weight)[0]
    assert sparse.layout == dense.layout == torch.strided
    torch.testing.assert_close(sparse, dense, atol=1e-6, rtol=1e-6)


def test_no_sparse_embedding_where_it_would_be_wrong(tiny):
    """Untied (the embedding has its own dense gradient, which the optimizer needs), frozen (no
    gradient), or outside autograd: the decoder embeds the ids itself."""
    model, _ = tiny
    decoder, head = logprobs._decoder_and_head(model)
    ids = torch.tensor([[5, 7]])
    assert logprobs._tied_embeddings_sparse_grad(decoder, head, ids) is not None
    with torch.no_grad():
        assert logprobs._tied_embeddings_sparse_grad(decoder, head, ids) is None
    untied = torch.nn.Linear(head.in_features, head.out_features, bias=False)
    assert logprobs._tied_embeddings_sparse_grad(decoder, untied, ids) is None
    head.weight.requires_grad_(False)
    assert logprobs._tied_embeddings_sparse_grad(decoder, head, ids) is None


def test_grouped_query_attention_without_copies_on_cpu(tiny, monkeypatch):
    """packed_logps on CPU with SDPA: no key/value head is copied for its query heads
    (transformers' ``repeat_kv``), the log-probs and gradients are the copying path's, and the
    switch (a process-wide variable of transformers) is set only around the forward."""
    from transformers.integrations import sdpa_attention

    model, tok = tiny
    decoder, _ = logprobs._decoder_and_head(model)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    copies = []
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: copies.append(n) or x.repeat_interleave(n, 1))
    batch = pack([PairExample(1, *_seqs(tok, 2))], ("chosen", "rejected"), tok.pad_token_id, share_prompt=True)
    grouped = packed_logps(model, **batch.model_inputs("cpu"))
    assert copies == [] and logprobs._FORCE_GQA not in os.environ
    g_grouped = torch.autograd.grad(grouped.sum(), list(model.parameters()))
    monkeypatch.setenv(logprobs._FORCE_GQA, "0")  # a user's value: left as it is, here "copy"
    with logprobs._grouped_query_sdpa(model, decoder, torch.device("cpu")):
        assert os.environ[logprobs._FORCE_GQA] == "0"
    copied = packed_logps(model, **batch.model_inputs("cpu"))
    assert copies and os.environ[logprobs._FORCE_GQA] == "0"
    torch.testing.assert_close(grouped, copied, atol=1e-6, rtol=0)
    for a, b in zip(g_grouped, torch.autograd.grad(copied.sum(), list(model.parameters()))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
