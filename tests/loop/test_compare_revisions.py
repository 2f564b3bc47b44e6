"""``ratchet compare-revisions`` on the tiny random model: base, DPO and SRPO per revision step, from one set of pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratchet import cli
from ratchet.config import load_config
from ratchet.data.records import read_jsonl, write_jsonl
from ratchet.judge import JUDGES
from ratchet.judge.base import Judgment
from ratchet.loop import compare, stages

RECIPE = Path(__file__).parent.parent.parent / "recipes" / "arithmetic-srpo.yaml"


class ParityJudge:
    """A verifier for a random model: 'correct' when the answer has an even length; longer scores higher."""

    def judge(self, prompt, completions):
        return [Judgment(score=float(len(c)), correct=len(c) % 2 == 0) for c in completions]


@pytest.fixture
def parity_judge(monkeypatch):
    monkeypatch.setitem(JUDGES, "parity", ParityJudge)


@pytest.fixture
def short_template(tmp_path):
    """The tiny model has 512 positions and a byte tokenizer: the bundled template would not fit."""
    path = tmp_path / "revise.txt"
    path.write_text("$prompt\nDraft: $draft\nBetter:\n")
    return path


def _overrides(tmp_path, model_dir, template, revisions):
    return [f"runs_dir={tmp_path / 'runs'}", "name=cmp", f"model={model_dir}", "task.train_prompts=4",
            "task.heldout_prompts=3", "generate.k=3", "generate.max_new_tokens=6", "generate.temperature=1.0",
            "evaluate.max_new_tokens=6", "train.batch_size=2", "train.max_length=400", "judge.name=parity",
            "pair.strategy=best_vs_worst", "train.lr=1e-3", f"revise.revisions={revisions}",
            f"revise.template={template}", "pair.drop_truncated=false"]  # 6 tokens cut nearly every sample


def test_recipe_loads_as_srpo_over_rounds_with_revisions():
    cfg = load_config(RECIPE)
    assert cfg.train.loss.name == "srpo" and cfg.train.loss.params == {"alpha": 0.8, "beta": 0.01}
    assert cfg.revise.revisions == 2 and cfg.task.name == "arithmetic" and cfg.model.path == "smollm2-135m"
    assert cfg.rounds == 2 and cfg.revise.train_drafts == 1 and cfg.evaluate.gate_on == "best_revision"


@pytest.mark.slow
def test_compare_from_self_generated_pairs(tmp_path, tiny_model_dir, parity_judge, short_template, capsys):
    args = ["compare-revisions", "--recipe", str(RECIPE), *_overrides(tmp_path, tiny_model_dir, short_template, 2)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    run = tmp_path / "runs" / "cmp" / "compare-revisions"
    results = json.loads((run / "results.json").read_text())
    acc = results["accuracy"]
    assert set(acc) == {"base", "dpo", "srpo"} and all(len(v) == 3 for v in acc.values())
    assert out[-1] == (f"srpo_vs_dpo: srpo_rev0={acc['srpo'][0]:.3f} srpo_revN={acc['srpo'][2]:.3f} "
                       f"dpo_rev0={acc['dpo'][0]:.3f} dpo_revN={acc['dpo'][2]:.3f} N=2")
    assert out[0].startswith("| model | rev 0 | rev 1 | rev 2 |")
    for name in ("prompts", "completions", "judgments", "pairs", "heldout"):
        assert (run / f"{name}.jsonl").exists(), name
    for f in ("config.yaml", "table.md", "revisions.png", "manifest.json", "train_dpo/model/model.safetensors",
              "train_srpo/model/model.safetensors"):
        assert (run / f).exists(), f
    for name in ("base", "dpo", "srpo"):  # same held-out prompts, N+1 answers each
        rows = read_jsonl(run / f"eval_{name}" / "revisions.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(run / "heldout.jsonl")]
        assert all(len(r["answers"]) == 3 for r in rows)
    # both objectives trained from the base model on the same pairs, with the same lr/epochs/batch
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    dpo, srpo = manifest["train_dpo"], manifest["train_srpo"]
    assert dpo["inputs"] == srpo["inputs"] and dpo["config"]["model"] == srpo["config"]["model"]
    assert dpo["config"]["train"]["loss"]["name"] == "dpo" and srpo["config"]["train"]["loss"]["name"] == "srpo"
    assert {k: v for k, v in dpo["config"]["train"].items() if k != "loss"} == \
           {k: v for k, v in srpo["config"]["train"].items() if k != "loss"}
    assert results["pairs"] == len(read_jsonl(run / "pairs.jsonl")) > 0


@pytest.mark.slow
def test_given_pairs_and_resume(tmp_path, tiny_model_dir, parity_judge, short_template, monkeypatch):
    pairs = write_jsonl(tmp_path / "given.jsonl", [
        {"id": f"p{i}", "messages": [{"role": "user", "content": f"what is {i} + 1?"}],
         "chosen": f"Answer: {i + 1}", "rejected": f"Answer: {i + 2}"} for i in range(4)])
    cfg = load_config(RECIPE, _overrides(tmp_path, tiny_model_dir, short_template, 1))
    first = compare.compare_revisions(cfg, pairs=pairs, progress=False)
    run = compare.compare_dir(cfg)
    assert read_jsonl(run / "pairs.jsonl") == read_jsonl(pairs) and not (run / "completions.jsonl").exists()
    assert first["pairs"] == 4 and compare.summary_line(first).endswith(" N=1")

    def boom(*a, **k):
        raise AssertionError("a finished stage ran again")

    for name in ("train_model", "evaluate_revisions", "generate"):
        monkeypatch.setattr(stages, name, boom)
    again = compare.compare_revisions(cfg, pairs=pairs, progress=False)  # resumed: every stage skipped
    assert again["accuracy"] == first["accuracy"]
    with pytest.raises(ValueError, match="at least one revision"):
        compare.compare_revisions(load_config(RECIPE, ["revise.revisions=0"]), pairs=pairs)
