"""Every objective in LOSSES trains from a pairs file, and SRPO's revision sequences are the ones
``ratchet.data.revision`` builds for inference."""

import math

import pytest

from ratchet.data.revision import SEQUENCE_NAMES
from ratchet.losses import LOSSES
from ratchet.train.batches import prepare_pairs

from _kit import fresh_model, metrics, pair_rows, run, write_pairs
from conftest import tokenize_revision

ON_POLICY = ("online", "two_turn")  # trained by ratchet.train.online from rollouts, not from a pairs file

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows():
    return [{**r, "ref_response": f"maybe {i}", "chosen_win_rate": 0.75, "rejected_win_rate": 0.25}
            for i, r in enumerate(pair_rows(6))]


@pytest.mark.parametrize("loss", sorted(n for n, s in LOSSES.items() if s.data not in ON_POLICY))
def test_every_objective_trains_from_pairs(tmp_path, tiny_model_dir, loss):
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows=_rows())
    anchor = fresh_model(tiny_model_dir)[0] if loss == "inpo" else None
    summary = run(tiny_model_dir, pairs, tmp_path / "run", loss=loss, batch_size=3, max_length=512,
                  anchor_model=anchor)
    rows = metrics(tmp_path / "run")
    assert summary["steps"] == len(rows) == 2
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)


def test_srpo_revision_sequences_match_the_data_module(tiny_tokenizer):
    row = pair_rows(1)[0]
    ours = prepare_pairs([row], tiny_tokenizer, max_length=512, sequences=SEQUENCE_NAMES).examples[0]
    theirs = tokenize_revision(row, tiny_tokenizer, max_length=512)
    for name in SEQUENCE_NAMES:
        assert ours.sequence(name).input_ids == theirs[name].input_ids, name
        assert ours.sequence(name).completion_mask == theirs[name].completion_mask, name
