"""Shared-prompt packing gives the same log-probs and gradients as one row per sequence, and the
objective's tensor names map onto sequences for every entry of LOSSES."""

import pytest
import torch

from ratchet.logprobs import completion_logps, packed_logps
from ratchet.losses import LOSSES
from ratchet.train.batches import collate, pack, prepare_pairs
from ratchet.train.step import needs

from _kit import one_thread, pair_rows

ON_POLICY = ("online", "two_turn")  # trained by ratchet.train.online from rollouts, not from a pairs file

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

NAMES = ("chosen", "rejected", "kl", "revise_chosen_from_rejected")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_rows_match_unshared_and_naive(tiny, attn):
    model, tok = tiny
    model.config._attn_implementation = attn
    examples = prepare_pairs(pair_rows(5), tok, max_length=512, sequences=NAMES).examples
    shared = pack(examples, NAMES, tok.pad_token_id, share_prompt=True)
    single = pack(examples, NAMES, tok.pad_token_id, share_prompt=False)
    # chosen, rejected and kl share the prompt (one row); the revision has its own prompt
    assert shared.input_ids.shape[0] == 2 * len(examples) and single.input_ids.shape[0] == 4 * len(examples)
    assert shared.tokens < single.tokens
    a = packed_logps(model, **shared.model_inputs("cpu"), chunk_size=5)
    b = packed_logps(model, **single.model_inputs("cpu"))
    seqs = [e.sequence(n) for n in NAMES for e in examples]
    plain = collate(seqs, tok.pad_token_id)
    c = completion_logps(model, plain.input_ids, plain.attention_mask, plain.completion_mask)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(b, c, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(shared.lengths, torch.tensor([s.num_completion_tokens for s in seqs]))
    weights = torch.arange(len(a), dtype=torch.float32)  # a different upstream gradient per sequence
    (ga,) = torch.autograd.grad((a * weights).sum(), model.model.layers[0].mlp.up_proj.weight)
    (gc,) = torch.autograd.grad((c * weights).sum(), model.model.layers[0].mlp.up_proj.weight)
    torch.testing.assert_close(ga, gc, atol=1e-4, rtol=1e-4)


def test_completions_in_a_row_do_not_see_each_other(tiny):
    model, tok = tiny
    rows = pair_rows(1)
    other = [{**rows[0], "chosen": "something else entirely, and longer"}]
    logps = []
    for r in (rows, other):
        ex = prepare_pairs(r, tok, max_length=256).examples
        logps.append(packed_logps(model, **pack(ex, ("chosen", "rejected"), tok.pad_token_id,
                                                 share_prompt=True).model_inputs("cpu")))
    assert logps[0][0] != logps[1][0]  # chosen changed
    torch.testing.assert_close(logps[0][1], logps[1][1], atol=1e-5, rtol=0)  # rejected did not notice


@pytest.mark.parametrize("name", sorted(n for n, s in LOSSES.items() if s.data not in ON_POLICY))
def test_every_objective_maps_onto_sequences(name):
    need = needs(LOSSES[name])
    assert need.policy[:1] == ("chosen",)
    spec = LOSSES[name]
    if spec.needs_reference and spec.data != "sft":
        assert need.reference
    assert set(need.reference) <= set(need.policy)
    if name == "selm":
        assert "ref_response" in need.policy
    if name == "sppo":
        assert need.values == ("chosen_win_rate", "rejected_win_rate")
    if name == "inpo":
        assert need.anchor == ("chosen", "rejected")
    if name == "srpo":
        assert len(need.policy) == 6


@pytest.mark.parametrize("name", sorted(n for n, s in LOSSES.items() if s.data in ON_POLICY))
def test_an_on_policy_objective_refuses_a_file(name):
    with pytest.raises(ValueError, match=rf"objective '{name}' learns from on-policy samples .* `ratchet loop`"):
        needs(LOSSES[name])
