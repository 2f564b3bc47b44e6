"""A NaN or inf loss or gradient stops training with an error naming the step and the pairs rows,
before the update, and the last good checkpoint stays on disk."""

import dataclasses

import pytest
import torch

from ratchet.losses import LOSSES, DPOParams, LossSpec, dpo_loss
from ratchet.train import checkpoint, offline
from ratchet.train.runtime import NonFiniteError

from _kit import metrics, run, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nan_loss_names_step_and_row(tmp_path, tiny_model_dir, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    precompute = offline._precompute

    def corrupt(model, examples, *a, **kw):  # a NaN reference log-prob for pairs row 7
        out = precompute(model, examples, *a, **kw)
        if kw["prefix"] == "ref":
            out["ref_chosen_logps"][[e.row for e in examples].index(7)] = float("nan")
        return out

    monkeypatch.setattr(offline, "_precompute", corrupt)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        run(tiny_model_dir, pairs, out, batch_size=2, shuffle=False, checkpoint_every=2)
    msg = str(err.value)
    assert "non-finite loss at step 4" in msg and "[7, 8]" in msg and "non-finite loss: [7]" in msg
    assert "step-0000002" in msg
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    assert checkpoint.latest(out / "checkpoints").name == "step-0000002"  # the last good one, kept
    assert not (out / "model").exists()


def _exploding_gradient_dpo(*, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                            beta):
    """DPO, plus a term that is 0 in value but whose gradient is NaN (d sqrt(z)/dz at z = 0 is inf)
    once the policy's chosen log-prob has moved away from the reference."""
    out = dpo_loss(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                   ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps, beta=beta)
    if not ((policy_chosen_logps.detach() - ref_chosen_logps).abs() > 1e-3).any():
        return out
    trap = torch.sqrt((policy_chosen_logps - policy_chosen_logps.detach()) ** 2)
    return dataclasses.replace(out, loss=out.loss + trap)


def test_nan_gradient_stops_before_the_update(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(LOSSES, "trap", LossSpec(name="trap", fn=_exploding_gradient_dpo, params=DPOParams,
                                                 data="paired", reads=LOSSES["dpo"].reads))
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        run(tiny_model_dir, pairs, out, loss="trap", batch_size=4, shuffle=False, checkpoint_every=1)
    msg = str(err.value)
    assert "non-finite gradient norm at step 2" in msg and "[5, 6, 7, 8]" in msg
    assert len(metrics(out)) == 1 and checkpoint.latest(out / "checkpoints").name == "step-0000001"
