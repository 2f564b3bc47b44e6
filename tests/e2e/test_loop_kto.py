"""One loop round with KTO on the tiny model: the pair stage writes unpaired rows and the train
stage trains on them (``recipes/arithmetic-kto.yaml``'s path through the loop)."""

import json
import math

import pytest

from ratchet.config import load_config
from ratchet.judge import JUDGES
from ratchet.judge.base import Judgment
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides as _overrides

pytestmark = pytest.mark.slow  # a whole loop round


class ParityJudge:
    """Correct iff the completion has an even number of characters: a random model gets about
    half of its samples right, so both labels occur."""

    def judge(self, prompt, completions):
        return [Judgment(score=float(len(c) % 2 == 0), correct=len(c) % 2 == 0) for c in completions]


@pytest.fixture
def parity_judge(monkeypatch):
    monkeypatch.setitem(JUDGES, "parity", ParityJudge)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_kto_round_trains_on_unpaired_rows(tmp_path, tiny_model_dir, parity_judge):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=kto", "judge.name=parity", "train.loss=kto",
                                                "pair.max_pairs_per_prompt=3"]
    summary = run_loop(load_config(None, o), progress=False)
    r1 = tmp_path / "runs" / "kto" / "round_1"
    rows = _lines(r1 / "pairs.jsonl")
    assert rows and all(set(r) == {"id", "messages", "completion", "label", "complete"} for r in rows)
    assert {r["label"] for r in rows} == {True, False}
    logged = _lines(r1 / "train" / "train_metrics.jsonl")
    assert logged and all("completion_logps" in r and math.isfinite(r["loss"]) for r in logged)
    assert (r1 / "train" / "model" / "model.safetensors").exists()
    assert json.loads((r1 / "train" / "train_summary.json").read_text())["pairs"] == len(rows)
    assert math.isfinite(summary["rounds"][1]["train_loss"]) and "accuracy" in summary["rounds"][1]
