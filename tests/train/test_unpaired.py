"""KTO trains on unpaired rows (``{"messages", "completion", "label"}``, as ``ratchet pair`` writes
them for KTO) as well as on pairs, and the same examples give the same per-example losses either way."""

import math

import pytest
import torch

from ratchet.data.pairing import unpaired_from_pairs
from ratchet.losses import LOSSES
from ratchet.train.batches import PairsError, prepare_pairs, row_format
from ratchet.train.reference import compute_reference_logps
from ratchet.train.step import PolicyLogps, micro_batch_loss, needs

from _kit import fresh_model, metrics, pair_rows, run, write_pairs
from conftest import make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _unpaired(n: int) -> list[dict]:
    return unpaired_from_pairs(pair_rows(n))


def test_kto_trains_on_an_unpaired_file(tmp_path, tiny_model_dir):
    rows = _unpaired(5)[:-1]  # 9 rows, 5 desirable and 4 undesirable
    path = write_pairs(tmp_path / "unpaired.jsonl", rows=rows)
    summary = run(tiny_model_dir, path, tmp_path / "run", loss="kto", batch_size=4)
    logged = metrics(tmp_path / "run")
    assert summary["pairs"] == 9 and summary["steps"] == len(logged) == 3
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in logged)
    assert all("completion_logps" in r and "chosen_logps" not in r for r in logged)
    assert list(tmp_path.glob("unpaired.jsonl.ref-*.safetensors"))  # reference log-probs precomputed


def test_the_mismatched_answer_comes_from_another_prompt(tiny_tokenizer):
    rows = _unpaired(3)  # two rows per prompt, side by side
    need = needs(LOSSES["kto"], "unpaired")
    examples = prepare_pairs(rows, tiny_tokenizer, max_length=512, sequences=need.policy, values=need.values,
                             row_format="unpaired").examples
    decode = lambda ex, name: tiny_tokenizer.decode(  # noqa: E731
        [t for t, m in zip(ex.sequence(name).input_ids, ex.sequence(name).completion_mask) if m])
    for n, ex in enumerate(examples):
        nxt = rows[(n // 2 * 2 + 2) % len(rows)]  # the chosen answer of the next prompt
        assert decode(ex, "kl").startswith(nxt["completion"]), n
        assert decode(ex, "completion").startswith(rows[n]["completion"])
    assert [e.values["label"] for e in examples] == [1.0, 0.0] * 3


@pytest.mark.parametrize("change, reason", [
    (lambda r: r.pop("completion"), "missing field(s) ['completion']"),
    (lambda r: r.pop("label"), "missing field(s) ['label']"),
    (lambda r: r.update(label="yes"), "label must be true (desirable) or false (undesirable), got 'yes'"),
    (lambda r: r.update(label=1), "label must be true (desirable) or false (undesirable), got 1"),
    (lambda r: r.update(completion=" "), "empty completion completion"),
])
def test_a_bad_unpaired_row_is_named(tmp_path, tiny_model_dir, change, reason):
    rows = _unpaired(3)
    change(rows[3])
    path = write_pairs(tmp_path / "unpaired.jsonl", rows=rows)
    with pytest.raises(PairsError, match=r"unpaired row 4: " + __import__("re").escape(reason)):
        run(tiny_model_dir, path, tmp_path / "run", loss="kto")


def test_a_paired_objective_refuses_an_unpaired_file(tmp_path, tiny_model_dir):
    path = write_pairs(tmp_path / "unpaired.jsonl", rows=_unpaired(2))
    with pytest.raises(ValueError, match=r"objective 'dpo' trains on pairs .* the file holds unpaired rows"):
        run(tiny_model_dir, path, tmp_path / "run", loss="dpo")


def _kto_losses(model, reference, tok, rows):
    """Per-example KTO losses and z0 of ``rows``, all in one micro-batch."""
    spec, fmt = LOSSES["kto"], row_format(rows)
    need = needs(spec, fmt)
    examples = prepare_pairs(rows, tok, max_length=512, sequences=need.policy, values=need.values,
                             row_format=fmt).examples
    ref = compute_reference_logps(reference, examples, tok.pad_token_id, 64, progress=False, names=need.reference)
    _, out, _, _ = micro_batch_loss(PolicyLogps(model), spec, spec.make_params(beta=0.5), need, examples, ref,
                                    pad=tok.pad_token_id, share_prompt=True, weights=[1.0] * len(examples),
                                    device="cpu")
    return out.loss.detach(), out.metrics["kl_baseline"]


def test_unpaired_rows_give_the_losses_of_the_same_pairs(tiny_model_dir, tiny_tokenizer):
    """Pair i is unpaired rows 2i (chosen, desirable) and 2i + 1 (rejected, undesirable); each
    gets the same mismatched answer as the pair, so z0 over a batch is the same, and so is every
    example's loss. The reference is another random model, so r != 0 and the losses differ."""
    model = fresh_model(tiny_model_dir)[0]
    reference = make_model(len(tiny_tokenizer), seed=1)
    pairs = pair_rows(5)
    paired, z_paired = _kto_losses(model, reference, tiny_tokenizer, pairs)
    unpaired, z_unpaired = _kto_losses(model, reference, tiny_tokenizer, unpaired_from_pairs(pairs))
    as_unpaired = paired.view(2, -1).T.reshape(-1)  # [chosen..., rejected...] -> c0, r0, c1, r1, ...
    torch.testing.assert_close(unpaired, as_unpaired, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z_unpaired, z_paired, atol=1e-5, rtol=1e-5)
    assert paired.std() > 1e-3  # not the trivial 0.5 everywhere of policy == reference


def test_one_step_on_unpaired_rows_equals_one_step_on_pairs(tmp_path, tiny_model_dir, tiny_tokenizer):
    """The trainer end to end: one step over every example, so z0 is over the same set."""
    pairs = pair_rows(5)
    out = {}
    for name, rows, batch in (("pairs", pairs, 5), ("unpaired", unpaired_from_pairs(pairs), 10)):
        path = write_pairs(tmp_path / f"{name}.jsonl", rows=rows)
        run(tiny_model_dir, path, tmp_path / name, loss="kto", batch_size=batch, shuffle=False,
            reference_model=make_model(len(tiny_tokenizer), seed=1), reference_id="seed-1")
        (out[name],) = metrics(tmp_path / name)
    for k in ("loss", "grad_norm", "kl_baseline", "rewards"):
        assert out["unpaired"][k] == pytest.approx(out["pairs"][k], rel=1e-4, abs=1e-6), k


def test_kto_weights_balance_the_labels_unless_the_recipe_sets_them(tmp_path, tiny_model_dir):
    rows = _unpaired(5)[:-1]  # 5 desirable, 4 undesirable: lambda_U = 5/4 makes lambda_D n_D / (lambda_U n_U) = 1
    path = write_pairs(tmp_path / "unpaired.jsonl", rows=rows)
    params = run(tiny_model_dir, path, tmp_path / "auto", loss="kto", batch_size=9)["params"]
    assert params["desirable_weight"] == 1.0 and params["undesirable_weight"] == pytest.approx(1.25)
    given = run(tiny_model_dir, path, tmp_path / "given", loss="kto", batch_size=9,
                loss_params={"desirable_weight": 2.0})["params"]
    assert given["desirable_weight"] == 2.0 and given["undesirable_weight"] == 1.0
    paired = run(tiny_model_dir, write_pairs(tmp_path / "pairs.jsonl", n=3), tmp_path / "pairs", loss="kto",
                 batch_size=3)["params"]  # pairs: one desirable and one undesirable answer each
    assert paired["desirable_weight"] == paired["undesirable_weight"] == 1.0
