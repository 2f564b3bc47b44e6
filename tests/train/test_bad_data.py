"""Bad pairs rows are reported by row number before any training; --skip-invalid skips and
counts them; truncation is printed and saved, never silent."""

import json
import re

import pytest

from ratchet.train.batches import PairsError

from _kit import pair_rows, run, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def _bad_rows():
    rows = pair_rows(8)
    del rows[1]["rejected"]  # row 2: missing field
    rows[3]["chosen"] = "   "  # row 4: empty completion
    rows[5]["messages"][0]["content"] = "x" * 300  # row 6: the prompt alone exceeds max_length
    return rows


@pytest.mark.parametrize("row, reason", [(2, "missing field(s) ['rejected']"), (4, "empty chosen completion"),
                                         (6, "leaving no room for the completion within max_length=256")])
def test_invalid_row_stops_before_training(tmp_path, tiny_model_dir, row, reason):
    rows = pair_rows(8)
    rows[row - 1] = _bad_rows()[row - 1]
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows=rows)
    with pytest.raises(PairsError, match=rf"pairs row {row}: .*{re.escape(reason)}") as err:
        run(tiny_model_dir, pairs, tmp_path / "run")
    assert "--skip-invalid" in str(err.value)
    assert not (tmp_path / "run" / "train_metrics.jsonl").exists()  # nothing trained


def test_skip_invalid_counts_and_truncation_is_reported(tmp_path, tiny_model_dir, capsys):
    rows = _bad_rows()
    rows[0]["chosen"] = "a long answer " * 30  # row 1: truncated to fit max_length
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows=rows)
    summary = run(tiny_model_dir, pairs, tmp_path / "run", skip_invalid=True)
    printed = capsys.readouterr().out
    assert "skipped 3 invalid rows of 8" in printed and "skipped pairs row 2: missing field" in printed
    assert "1 completions truncated to max_length=256" in printed
    saved = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert saved["skipped"] == summary["skipped"] == 3 and [r for r, _ in saved["skipped_rows"]] == [2, 4, 6]
    assert saved["truncated"] == 1 and saved["pairs"] == 5
