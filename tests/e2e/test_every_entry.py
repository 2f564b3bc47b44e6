"""Every registry entry reachable from a recipe: one ``ratchet loop`` round on the tiny model for
every objective in ``LOSSES``, every pair strategy in ``STRATEGIES`` and every SFT selection in
``SELECTIONS``, with the stage data each needs (win rates, anchor log-probs, revision prompts,
self-scores, gold answers, self-written tests) built by the loop itself. A new entry without a
working recipe path fails here: add its overrides to ``EXTRA`` if it needs any."""

import json

import pytest

from ratchet import cli, config
from ratchet.data.pairing import STRATEGIES
from ratchet.data.records import read_jsonl
from ratchet.data.selection import SELECTIONS
from ratchet.judge import JUDGES
from ratchet.judge.base import Judgment
from ratchet.loop import stages
from ratchet.losses import LOSSES

from conftest import tiny_run_overrides
from e2e.test_humaneval_dstc import RECIPE, ScriptedSampler, code_model_dir  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow  # whole loop rounds


class LengthParity:
    """Score = length / 10 capped at 1 (scores differ, on a 0-1 scale), correct iff the length is
    even (both verdicts occur on a random model's samples): every strategy, labeller and selection
    finds something to pick."""

    def judge(self, prompt, completions):
        return [Judgment(score=min(len(c), 10) / 10, correct=len(c) % 2 == 0) for c in completions]


@pytest.fixture
def length_parity(monkeypatch):
    monkeypatch.setitem(JUDGES, "length_parity", LengthParity)


EXTRA = {  # what an entry needs beyond the tiny run's settings (tiny_run_overrides)
    # margins of 0.05 (half a character's score): the random model's samples differ by little
    "score_margin": ["pair.params.margin=0.05"],
    "gold_vs_samples": ["pair.params.margin=0.05"],
    "dno": ["pair.params.margin=0.05"],
    "srpo": ["train.max_length=1024"],  # the revision prompt holds the question and a draft, in byte tokens
    "pit": ["train.max_length=1024"],
}


def _round(tmp_path, model_dir, name: str, extra: list[str]) -> dict:
    argv = ["loop", *tiny_run_overrides(tmp_path, model_dir), f"name={name}", "judge.name=length_parity",
            "task.train_prompts=2", "task.heldout_prompts=1", "generate.k=3", *extra]
    assert cli.main(argv) == 0
    run = tmp_path / "runs" / name
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "round_1" / "train" / "model" / "model.safetensors").exists()  # the round trained
    assert summary["metric"] == "accuracy" and summary["rounds"][1]["accuracy"] is not None  # the held-out metric
    return summary


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_objective_runs_a_round(tmp_path, tiny_model_dir, length_parity, loss):
    _round(tmp_path, tiny_model_dir, loss, [f"train.loss.name={loss}", *EXTRA.get(loss, [])])
    run = tmp_path / "runs" / loss / "round_1"
    if LOSSES[loss].data in ("online", "two_turn"):
        return  # on-policy: no pairs file
    rows = read_jsonl(run / "pairs.jsonl")
    assert rows
    if loss == "sppo":  # each sample's win rate against the prompt's samples, in [0, 1]
        assert all(0 <= r["chosen_win_rate"] <= 1 and 0 <= r["rejected_win_rate"] <= 1 for r in rows)
        assert all(r["chosen_win_rate"] > r["rejected_win_rate"] for r in rows)  # best_vs_worst by score
    if loss == "inpo":  # the anchor's log-probs were computed (round 1: the starting model)
        assert list(run.glob("pairs.jsonl.anchor-*.safetensors"))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_pair_strategy_runs_a_round(tmp_path, tiny_model_dir, length_parity, code_model_dir, monkeypatch,
                                          strategy):
    if strategy == "dstc":  # code samples and self-written tests: the humaneval task with a scripted sampler
        monkeypatch.setitem(stages.SAMPLERS, "scripted", ScriptedSampler)
        monkeypatch.setattr(config, "SAMPLER_NAMES", (*config.SAMPLER_NAMES, "scripted"))
        o = [f"runs_dir={tmp_path / 'runs'}", "name=dstc", f"model={code_model_dir}", "task.train_prompts=1",
             "task.heldout_prompts=1", "generate.k=3", "generate.tests=1", "generate.max_new_tokens=8",
             "evaluate.max_new_tokens=8", "train.batch_size=2", "train.max_length=2048",
             "generate.sampler=scripted"]
        assert cli.main(["loop", str(RECIPE), *o]) == 0
        run = tmp_path / "runs" / "dstc"
        assert (run / "round_1" / "train" / "model" / "model.safetensors").exists()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["metric"] == "accuracy" and summary["rounds"][1]["accuracy"] is not None  # pass@1, real tests
        return
    _round(tmp_path, tiny_model_dir, strategy, [f"pair.strategy={strategy}", *EXTRA.get(strategy, [])])


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_every_sft_selection_runs_a_round(tmp_path, tiny_model_dir, length_parity, selection):
    _round(tmp_path, tiny_model_dir, selection, ["train.loss.name=sft", f"pair.selection={selection}"])
    rows = read_jsonl(tmp_path / "runs" / selection / "round_1" / "pairs.jsonl")
    assert rows and all(r["selection"] == selection for r in rows)


def test_inpo_round_two_anchors_on_the_start_and_refers_to_round_one(tmp_path, tiny_model_dir, length_parity):
    """INPO's two models (arXiv 2407.00617, L_t): the anchor is the fixed pi_ref, the run's starting
    model in every round; the reference is pi_t, the model the round starts from (round 1's, kept)."""
    _round(tmp_path, tiny_model_dir, "inpo2", ["train.loss.name=inpo", "rounds=2", "gate.tolerance=1.0"])
    run = tmp_path / "runs" / "inpo2"
    key = json.loads((run / "round_2" / "manifest.json").read_text())["stages"]["train"]["config"]
    assert key["anchor"]["path"] == str(tiny_model_dir)
    assert key["reference"]["path"] == key["model"]["path"] == str(run / "round_1" / "train" / "model")
    assert list((run / "round_2").glob("pairs.jsonl.anchor-*.safetensors"))
