"""A whole round end to end on the tiny random model: every stage's files, via the loop and the CLI."""

import json

import pytest
import yaml

from conftest import tiny_run_overrides as _overrides
from ratchet import cli


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_demo_round_writes_every_stage(tmp_path, tiny_model_dir, length_judge, capsys):
    assert cli.main(["demo", *_overrides(tmp_path, tiny_model_dir)]) == 0
    run = tmp_path / "runs" / "tiny"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # the length judge scores without saying what is correct: the held-out metric is its mean score
    assert last.startswith("demo: mean_score ") and last.endswith(" on 3 held-out problems")
    assert yaml.safe_load((run / "config.yaml").read_text())["judge"]["name"] == "length"
    r1 = run / "round_1"
    prompts, completions = _lines(r1 / "prompts.jsonl"), _lines(r1 / "completions.jsonl")
    assert len(prompts) == 4 and [c["id"] for c in completions] == [p["id"] for p in prompts]
    assert all(len(c["completions"]) == 3 and c["sampling"]["k"] == 3 for c in completions)
    assert all(len(j["scores"]) == 3 for j in _lines(r1 / "judgments.jsonl"))
    pairs = _lines(r1 / "pairs.jsonl")
    assert pairs and all(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    assert (r1 / "train" / "model" / "model.safetensors").exists()
    assert len(_lines(r1 / "train" / "train_metrics.jsonl")) >= 1
    assert list(r1.glob("pairs.jsonl.ref-*.safetensors"))  # reference log-probs stored beside the pairs
    for d in (run / "round_0" / "eval", r1 / "eval"):
        assert json.loads((d / "metrics.json").read_text())["n"] == 3
        assert len(_lines(d / "answers.jsonl")) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


@pytest.mark.slow
def test_each_stage_runs_alone_from_the_cli(tmp_path, tiny_model_dir, length_judge):
    o = _overrides(tmp_path, tiny_model_dir)
    d = tmp_path / "stages"
    assert cli.main(["prompts", "--out", str(d / "prompts.jsonl"), *o]) == 0
    assert cli.main(["generate", "--model", str(tiny_model_dir), "--prompts", str(d / "prompts.jsonl"),
                     "--out", str(d / "completions.jsonl"), *o]) == 0
    assert cli.main(["judge", "--completions", str(d / "completions.jsonl"), "--out", str(d / "judgments.jsonl"),
                     *o]) == 0
    assert cli.main(["pair", "--completions", str(d / "completions.jsonl"), "--judgments",
                     str(d / "judgments.jsonl"), "--out", str(d / "pairs.jsonl"), *o]) == 0
    assert cli.main(["train", "--model", str(tiny_model_dir), "--pairs", str(d / "pairs.jsonl"),
                     "--out", str(d / "train"), *o]) == 0
    assert cli.main(["evaluate", "--model", str(d / "train" / "model"), "--prompts", str(d / "prompts.jsonl"),
                     "--out", str(d / "eval"), *o]) == 0
    assert json.loads((d / "eval" / "metrics.json").read_text())["n"] == 4
    assert (d / "train.config.yaml").exists() or (d / "train" / "train.config.yaml").exists()


def test_config_error_exit_code(capsys):
    assert cli.main(["demo", "train.nope=1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, tiny_model_dir, length_judge, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "1+1?"}],
                                 "chosen": "2", "rejected": "3"}) + "\n")
    o = _overrides(tmp_path, tiny_model_dir)
    assert cli.main(["train", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--out", str(tmp_path / "t"),
                     *o, "train.loss.name=rloo"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("ratchet: objective 'rloo' learns from on-policy samples scored "
                                               "while training; run it with `ratchet loop` (train.loss.name: "
                                               "rloo), not on a pairs file")
    assert cli.main(["train", "--model", str(tmp_path / "nowhere"), "--pairs", str(pairs),
                     "--out", str(tmp_path / "t"), *o]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_revise_and_per_revision_evaluation(tmp_path, tiny_model_dir, length_judge):
    o = _overrides(tmp_path, tiny_model_dir)
    d = tmp_path / "rev"
    assert cli.main(["prompts", "--split", "heldout", "--out", str(d / "p.jsonl"), *o]) == 0
    assert cli.main(["revise", "--model", str(tiny_model_dir), "--revisions", "2", "--input", str(d / "p.jsonl"),
                     "--out", str(d / "revisions.jsonl"), *o]) == 0
    assert all(len(r["answers"]) == 3 for r in _lines(d / "revisions.jsonl"))
    assert cli.main(["evaluate", "--model", str(tiny_model_dir), "--prompts", str(d / "p.jsonl"),
                     "--out", str(d / "eval"), "revise.revisions=2",
                     *[x for x in o if not x.startswith("judge.")]]) == 0
    m = json.loads((d / "eval" / "metrics.json").read_text())
    assert len(m["accuracy_per_revision"]) == 3 and m["n"] == 3
