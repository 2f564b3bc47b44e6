"""Shared-prefix packing (``batches.pack`` with ``share_prompt``) gives the log-probs, gradients and
first-step losses of one row per sequence, for the sequences of every objective, and computes each
distinct prefix once; the objective's tensor names map onto sequences for every entry of LOSSES."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ratchet.data.tokenize import Tokenized
from ratchet.logprobs import completion_logps, packed_logps
from ratchet.losses import LOSSES
from ratchet.train.adapters import enable_checkpointing
from ratchet.train.batches import PairExample, collate, pack, prepare_pairs
from ratchet.train.step import needs

from _kit import fresh_model, metrics, pair_rows, run, write_pairs

ON_POLICY = ("online", "two_turn")  # trained by ratchet.train.online from rollouts, not from a pairs file

pytestmark = pytest.mark.usefixtures("one_thread")

SEQUENCE_SETS = sorted({needs(s, fmt).policy for s in LOSSES.values() if s.data not in ON_POLICY
                        for fmt in (("pairs", "unpaired") if s.data in ("unpaired", "sft") else ("pairs",))})
"""Every set of sequences an objective runs through the policy: DPO's pair, SELM's ref_response,
KTO's kl on pairs and on unpaired rows, SRPO's six, SFT's one."""


def _rows(n: int) -> list[dict]:
    """Prompts of 6 lengths, answers of 5 and 7 (``pair_rows``), plus what some objectives read."""
    return [{**r, "ref_response": f"maybe {i}" * (i % 2 + 1), "completion": r["chosen"], "label": i % 2 == 0}
            for i, r in enumerate(pair_rows(n))]


def _examples(tok, names, n=6):
    fmt = "unpaired" if "completion" in names else "pairs"
    rows = [{k: v for k, v in r.items() if k not in (("chosen", "rejected") if fmt == "unpaired" else ())}
            for r in _rows(n)]
    return prepare_pairs(rows, tok, max_length=512, sequences=names, row_format=fmt).examples


def _unpacked(model, examples, names, pad):
    """Today's unshared computation: one right-padded row per sequence, ``completion_logps``."""
    plain = collate([e.sequence(n) for n in names for e in examples], pad)
    return completion_logps(model, plain.input_ids, plain.attention_mask, plain.completion_mask)


def _distinct_prefixes(examples, names) -> int:
    """Tokens a prefix tree per example holds, counted by hand: its distinct non-empty prefixes."""
    return sum(len({tuple(s[:t]) for s in (e.sequence(n).input_ids for n in names) for t in range(1, len(s) + 1)})
               for e in examples)


def test_layout_by_hand():
    """Prompt 1 2 3; answers 4 5 and 4 6 share the prompt and their first token."""
    ex = PairExample(1, Tokenized([1, 2, 3, 4, 5], [0, 0, 0, 1, 1], False),
                     Tokenized([1, 2, 3, 4, 6], [0, 0, 0, 1, 1], False))
    p = pack([ex], ("chosen", "rejected"), 0, share_prompt=True)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 4]]  # 6 sits where 5 sits in its own sequence
    assert p.attention_mask[0, 0].long().tolist() == [[1, 0, 0, 0, 0, 0],
                                                      [1, 1, 0, 0, 0, 0],
                                                      [1, 1, 1, 0, 0, 0],
                                                      [1, 1, 1, 1, 0, 0],
                                                      [1, 1, 1, 1, 1, 0],
                                                      [1, 1, 1, 1, 0, 1]]  # 6 does not see 5
    # chosen: 4 from 3 (index 2), 5 from 4 (index 3); rejected: 4 from 3, 6 from 4
    assert p.src.tolist() == [2, 3, 2, 3] and p.labels.tolist() == [4, 5, 4, 6]
    assert p.seq_index.tolist() == [0, 0, 1, 1] and p.lengths.tolist() == [2, 2]
    assert (p.tokens, p.prompt_tokens) == (6, 3)
    single = pack([ex], ("chosen", "rejected"), 0, share_prompt=False)
    assert single.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]] and single.attention_mask.dim() == 2
    assert (single.tokens, single.prompt_tokens) == (10, 6)


def test_padding_rows_and_distinct_first_tokens():
    """Two examples of different length in one batch (padding), and sequences that share no first
    token (a forest): padding is never a visible key, a padding query sees the first token only."""
    a = PairExample(1, Tokenized([1, 2, 3], [0, 1, 1], False), Tokenized([7, 8], [0, 1], False))
    b = PairExample(2, Tokenized([1, 2], [0, 1], False), Tokenized([1, 2], [0, 1], False))
    p = pack([a, b], ("chosen", "rejected"), 0, share_prompt=True)
    assert p.input_ids.tolist() == [[1, 2, 3, 7, 8], [1, 2, 0, 0, 0]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert p.real.tolist() == [[True] * 5, [True, True, False, False, False]]
    mask = p.attention_mask[:, 0].long().tolist()
    assert mask[0][3] == [0, 0, 0, 1, 0] and mask[0][4] == [0, 0, 0, 1, 1]  # the second tree sees itself only
    assert mask[1] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]] + [[1, 0, 0, 0, 0]] * 3
    assert p.src.tolist() == [0, 1, 3, 5, 5] and p.seq_index.tolist() == [0, 0, 2, 1, 3]  # identical b: one path


@pytest.mark.parametrize("names", SEQUENCE_SETS, ids="+".join)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logps_and_gradients_equal_unpacked(tiny, names, attn):
    model, tok = tiny
    model.config._attn_implementation = attn
    examples = _examples(tok, names)
    shared = pack(examples, names, tok.pad_token_id, share_prompt=True)
    single = pack(examples, names, tok.pad_token_id, share_prompt=False)
    assert shared.input_ids.shape[0] == len(examples) and single.input_ids.shape[0] == len(names) * len(examples)
    assert shared.tokens == _distinct_prefixes(examples, names) <= single.tokens
    if len(names) > 1:  # every prompt once: fewer prompt tokens than one row per sequence
        assert shared.prompt_tokens < single.prompt_tokens
    # every scored token's log-prob (its own output slot) within 1e-5 of the unshared rows' ...
    tokens = {k: packed_logps(model, **{**p.model_inputs("cpu"), "seq_index": torch.arange(len(p.labels)),
                                        "num_seqs": len(p.labels)})
              for k, p in (("shared", shared), ("single", single))}
    torch.testing.assert_close(tokens["shared"], tokens["single"], atol=1e-5, rtol=0)
    # ... and the sums (up to ~100 in size: fp32 rounding of a differently ordered sum is ~1e-5)
    a = packed_logps(model, **shared.model_inputs("cpu"), chunk_size=5)
    b = packed_logps(model, **single.model_inputs("cpu"))
    c = _unpacked(model, examples, names, tok.pad_token_id)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(b, c, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(shared.lengths, torch.tensor([e.sequence(n).num_completion_tokens
                                                             for n in names for e in examples]))
    weights = torch.linspace(-1, 2, len(a))  # a different upstream gradient per sequence
    params = [p for p in model.parameters() if p.requires_grad]
    ga = torch.autograd.grad((a * weights).sum(), params)
    gc = torch.autograd.grad((c * weights).sum(), params)
    for x, y in zip(ga, gc):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_srpo_shares_the_revision_prompts_head(tiny):
    """SRPO's six sequences: chosen and rejected share x; the four revision sequences share the
    revision prompt up to the draft, and two by two the whole revision prompt (same draft)."""
    _, tok = tiny
    names = needs(LOSSES["srpo"]).policy
    ex = _examples(tok, names, n=1)[0]
    seq = {n: ex.sequence(n) for n in names}
    prompt = {n: s.input_ids[:len(s.input_ids) - s.num_completion_tokens] for n, s in seq.items()}
    assert prompt["chosen"] == prompt["rejected"]
    assert prompt["revise_chosen_from_rejected"] == prompt["revise_rejected_from_rejected"]
    assert prompt["revise_chosen_from_chosen"] == prompt["revise_rejected_from_chosen"]
    by_prompt = [prompt["chosen"], prompt["revise_chosen_from_rejected"], prompt["revise_chosen_from_chosen"]]
    grouped = pack([ex], names, tok.pad_token_id, share_prompt=False).prompt_tokens  # 6 prompts
    assert grouped == 2 * sum(map(len, by_prompt))
    p = pack([ex], names, tok.pad_token_id, share_prompt=True)
    head = next(i for i, (u, v) in enumerate(zip(*by_prompt[1:])) if u != v)  # where the drafts differ
    assert head > 0 and p.prompt_tokens < sum(map(len, by_prompt)) - head + 1


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


def test_lora_with_gradient_checkpointing(tiny_model_dir):
    """Through PEFT and HF activation checkpointing (training mode) the 4D mask and position ids
    reach every layer: log-probs and LoRA gradients equal the unpacked ones."""
    model, tok = fresh_model(tiny_model_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    enable_checkpointing(peft)
    peft.train()
    names = ("chosen", "rejected", "kl")
    examples = _examples(tok, names, n=4)
    a = packed_logps(peft, **pack(examples, names, tok.pad_token_id, share_prompt=True).model_inputs("cpu"))
    c = _unpacked(peft, examples, names, tok.pad_token_id)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-6)
    params = [p for n, p in peft.named_parameters() if "lora_" in n]
    weights = torch.linspace(-1, 2, len(a))
    for x, y in zip(torch.autograd.grad((a * weights).sum(), params), torch.autograd.grad((c * weights).sum(), params)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss", ["dpo", "srpo", "kto", "simpo", "sft"])
def test_first_steps_equal_with_and_without_sharing(tmp_path, tiny_model_dir, loss):
    """The switch changes only the layout: the same loss and gradient norm every step (reference
    log-probs computed shared in both runs; the first loss is where they could differ most)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows=pair_rows(8))
    out = {}
    for share in (True, False):
        run(tiny_model_dir, pairs, tmp_path / f"run-{share}", loss=loss, batch_size=4, max_length=512,
            share_prompt=share, shuffle=False, checkpoint_every=0)
        out[share] = metrics(tmp_path / f"run-{share}")
    assert len(out[True]) == len(out[False]) == 2
    for a, b in zip(out[True], out[False]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), loss
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), loss
        for key in ("chosen_logps", "completion_logps"):  # after step 1: the same update was made
            assert a.get(key, 0.0) == pytest.approx(b.get(key, 0.0), abs=1e-4), (loss, key)


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
