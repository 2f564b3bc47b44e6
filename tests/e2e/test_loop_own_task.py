"""``ratchet loop`` on a user's own data and judges, on the tiny model: a JSONL task with text answers
(``exact``), a Python judge, a self-rewarding round (the policy rates its own samples), a reward model,
a pairwise judge's win rate, and bad recipes that fail before any model loads."""

from __future__ import annotations

import json
import sys

import pytest

from ratchet import cli
from ratchet.config import load_config
from ratchet.loop import stages
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides as _overrides


@pytest.fixture
def qa(tmp_path):
    path = tmp_path / "capitals.jsonl"
    rows = [{"q": f"What is the capital of land {i}?", "city": f"City{i}", "kind": "capital"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _own(tmp_path, model_dir, qa, *extra):
    o = [x for x in _overrides(tmp_path, model_dir) if not x.startswith(("judge.", "pair.strategy"))]
    return o + [f"task.source={qa}", "task.fields.prompt=q", "task.fields.answer=city", "task.heldout_fraction=0.2",
                "pair.strategy=best_vs_worst", *extra]


def _summary(tmp_path, name):
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())


@pytest.mark.slow
def test_jsonl_task_with_the_exact_judge(tmp_path, tiny_model_dir, qa, capsys):
    assert cli.main(["loop", *_own(tmp_path, tiny_model_dir, qa, "name=own", "judge.name=exact")]) == 0
    run = tmp_path / "runs" / "own"
    held = [json.loads(x) for x in (run / "heldout.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (run / "round_1" / "prompts.jsonl").read_text().splitlines()]
    assert len(train) == 4 and held and {r["id"] for r in held}.isdisjoint(r["id"] for r in train)
    assert all(r["task"] == "capitals" and r["answer"].startswith("City") and r["kind"] == "capital"
               for r in held + train)
    summary = _summary(tmp_path, "own")
    assert summary["metric"] == "accuracy" and summary["metric_start"] == 0.0  # a random model names no city
    details = json.loads((run / "round_0" / "eval" / "judgments.jsonl").read_text().splitlines()[0])["details"][0]
    assert details["gold"][0].startswith("City")
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("loop: rounds=1 accuracy 0.000 -> 0.000")


@pytest.mark.slow
def test_python_judge_scores_and_the_gate_on_mean_score(tmp_path, tiny_model_dir, qa, monkeypatch):
    (tmp_path / "judges_mod.py").write_text("def vowels(row, completions):\n"
                                            "    return [sum(ch in 'aeiou' for ch in c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("judges_mod", None)
    o = _own(tmp_path, tiny_model_dir, qa, "name=py", "judge.name=python:judges_mod:vowels", "judge.metric=mean_score",
             "rounds=2")
    summary = run_loop(load_config(None, o), progress=False)
    assert summary["metric"] == "mean_score" and [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    for r in summary["rounds"]:
        assert r["metric"] == "mean_score" and isinstance(r["mean_score"], float)
    for r in summary["rounds"][1:]:  # the gate compared mean scores
        assert r["kept"] == (r["mean_score"] >= max(x["mean_score"] for x in summary["rounds"][:r["round"]]
                                                    if x["kept"]))


@pytest.mark.slow
def test_self_rewarding_round_the_policy_judges_itself(tmp_path, tiny_model_dir, qa, monkeypatch):
    from ratchet.judge import llm_judge as llm

    seen = []

    def rating(self, text):  # the tiny policy writes no "[[n]]"; read a number off what it did write
        seen.append(text)
        return float(sum(map(ord, text)) % 10 + 1)

    monkeypatch.setattr(llm.PointwiseJudge, "rating", rating)
    o = _own(tmp_path, tiny_model_dir, qa, "name=self", "judge.name=llm", "judge.params.model=policy",
             "judge.params.max_new_tokens=4", "judge.params.temperature=1.0", "evaluate.judge=exact")
    summary = run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / "self" / "round_1"
    assert len(seen) == 4 * 3  # one rating per sample, written by the policy itself
    judged = [json.loads(x) for x in (run / "judgments.jsonl").read_text().splitlines()]
    assert all(1 <= s <= 10 for j in judged for s in j["scores"]) and all(c is None for j in judged for c in j["correct"])
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    assert manifest["judge"]["config"]["model"]["path"] == str(tiny_model_dir)  # the judge is the round's model
    assert (run / "train" / "model").exists() and summary["metric"] == "accuracy"  # held out by the verifier
    assert (run / "verified.jsonl").exists() and summary["rounds"][1]["pass_at_1"] == 0.0  # samples verified too
    metrics = json.loads((run / "metrics.json").read_text())  # the judge's agreement with the verifier, per round
    assert metrics["judge_agreement"] == summary["rounds"][1]["judge_agreement"] == 0.0  # nothing right to pick
    assert metrics["judge_pick_vs_random"] == 0.0


@pytest.mark.slow
def test_reward_model_judge_with_a_tiny_classifier(tmp_path, tiny_model_dir, tiny_tokenizer, qa):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=2)
    rm_dir = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(rm_dir)
    tiny_tokenizer.save_pretrained(rm_dir)
    o = _own(tmp_path, tiny_model_dir, qa, "name=rm", "judge.name=reward_model", f"judge.params.model={rm_dir}",
             "judge.params.batch_size=4")
    summary = run_loop(load_config(None, o), progress=False)
    judged = [json.loads(x) for x in (tmp_path / "runs" / "rm" / "round_1" / "judgments.jsonl").read_text().splitlines()]
    scores = [s for j in judged for s in j["scores"]]
    assert len(set(scores)) > 1 and summary["metric"] == "mean_score"


@pytest.mark.slow
def test_pairwise_judge_win_rate_against_round_zero(tmp_path, tiny_model_dir, qa, monkeypatch):
    from ratchet.judge import llm_judge as llm

    calls = []

    def compare(self, question, pairs):  # prefers the longer answer, as a consistent judge would
        calls.append(pairs)
        return [1.0 if len(a) > len(b) else 0.0 if len(b) > len(a) else 0.5 for a, b in pairs]

    monkeypatch.setattr(llm.PairwiseJudge, "compare", compare)
    qa_no_answer = tmp_path / "open.jsonl"
    qa_no_answer.write_text("".join(json.dumps({"q": f"Tell me about land {i}."}) + "\n" for i in range(30)))
    o = _own(tmp_path, tiny_model_dir, qa_no_answer, "name=win", "judge.name=llm", "judge.params.mode=pairwise",
             "judge.params.max_new_tokens=4")
    o = [x for x in o if not x.startswith("task.fields.answer")]
    summary = run_loop(load_config(None, o), progress=False)
    base, r1 = summary["rounds"]
    assert summary["metric"] == "win_rate" and base["win_rate"] == 0.5 and base["reference"] == "itself"
    assert r1["reference"].endswith("round_0/eval/answers.jsonl") and 0 <= r1["low"] <= r1["win_rate"] <= r1["high"]
    assert r1["kept"] == (r1["win_rate"] >= 0.5)


@pytest.mark.slow
def test_win_rate_against_gold_answers(tmp_path, tiny_model_dir, qa, monkeypatch):
    from ratchet.config import EvalConfig, JudgeConfig
    from ratchet.judge import llm_judge as llm
    from ratchet.models import load_model

    monkeypatch.setattr(llm.PairwiseJudge, "compare", lambda self, q, pairs: [0.0 for _ in pairs])  # gold always wins
    task = stages.make_task(load_config(None, _own(tmp_path, tiny_model_dir, qa)).task)
    prompts = stages.make_prompts(task, "heldout", tmp_path / "p.jsonl", 5)
    m = stages.evaluate(*load_model(str(tiny_model_dir)), prompts, tmp_path / "eval", EvalConfig(max_new_tokens=4),
                        JudgeConfig(name="llm", params={"mode": "pairwise"}), task=task, progress=False)
    assert m["metric"] == "win_rate" and m["win_rate"] == 0.0 and m["reference"] == "answer" and m["losses"] == m["n"]


def test_bad_recipes_fail_before_any_model_loads(tmp_path, tiny_model_dir, qa, monkeypatch, capsys):
    import ratchet.loop.model_cache as model_cache
    import ratchet.loop.run as run_mod

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(run_mod, "resolve_model", no_model)
    monkeypatch.setattr(model_cache, "load_model", no_model)
    base = _own(tmp_path, tiny_model_dir, qa, "name=bad")
    for extra, expected in ((["task.fields.answer=capital"], "no column 'capital' (task.fields.answer)"),
                            (["judge.name=exact", "judge.params.match=fuzzy"], "judge: match: expected one of"),
                            (["judge.name=python:nowhere:f"], "cannot import 'nowhere'"),
                            (["judge.name=regex"], "needs parameter(s) ['pattern']"),
                            (["train.loss.beta=abc"], "train.loss.beta"),
                            (["judge.metric=median"], "judge.metric"),
                            (["evaluate.judge_params.match=contains"], "set evaluate.judge too")):
        assert cli.main(["loop", *base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (extra, err)
