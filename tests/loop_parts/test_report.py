"""The HTML report: plots of every numeric metric, referenced relatively, and every round in the table."""

import re
import sys

import pytest

from ratchet.loop.report import write_report

SUMMARY = {
    "rounds": [
        {"round": 0, "accuracy": 0.3, "correct": 3, "n": 10, "kept": True},
        {"round": 1, "accuracy": 0.4, "k": 8, "sample_accuracy": 0.35, "pairs": 12, "train_loss": 0.69, "kept": True,
         "bstar": {"pass_at_1": 0.35, "balance_score": None}},
        {"round": 2, "accuracy": 0.2, "k": 8, "sample_accuracy": 0.5, "pairs": 0, "kept": False,
         "rollback": "held-out accuracy 0.2 < best 0.4", "skipped_training": "no pairs"},
    ],
    "best_model": "runs/x/round_1/train/model",
    "accuracy_start": 0.3,
}


def test_report_plots_every_numeric_metric(tmp_path):
    pytest.importorskip("matplotlib")
    out = write_report(tmp_path, SUMMARY)
    assert out == tmp_path / "report.html"
    text = out.read_text()
    sources = re.findall(r'<img src="([^"]+)"', text)
    # numbers in some round: accuracy, correct, n, sample_accuracy, pairs, train_loss, bstar.pass_at_1;
    # not kept (bool), rollback (str), bstar.balance_score (never a number), or k (8 in every round
    # that has it: a setting, shown in the table only)
    assert sorted(sources) == sorted(f"plots/{m}.png" for m in (
        "accuracy", "correct", "n", "sample_accuracy", "pairs", "train_loss", "bstar.pass_at_1"))
    for src in sources:
        assert (tmp_path / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one table row per round, the first cell its number; the escaped rollback message is there
    assert re.findall(r"<tr><td>(\d+)</td>", text) == ["0", "1", "2"]
    assert "<th>k</th>" in text
    assert "held-out accuracy 0.2 &lt; best 0.4" in text and "runs/x/round_1/train/model" in text


def test_report_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    text = write_report(tmp_path, SUMMARY).read_text()
    assert "<img" not in text and "matplotlib is not installed" in text
    assert re.findall(r"<tr><td>(\d+)</td>", text) == ["0", "1", "2"]


def test_a_regenerated_report_keeps_only_its_own_plots(tmp_path):
    pytest.importorskip("matplotlib")
    write_report(tmp_path, SUMMARY)
    fewer = {"rounds": [{"round": 0, "accuracy": 0.3}, {"round": 1, "accuracy": 0.4}]}
    write_report(tmp_path, fewer)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["accuracy.png"]
