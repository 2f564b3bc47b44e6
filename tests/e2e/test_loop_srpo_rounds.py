"""SRPO over rounds on the tiny model: every round's held-out answers revised (``revise.revisions``),
the gate on the revision ``evaluate.gate_on`` picks, the model's own (draft, revision) pairs in the
training data (``revise.train_drafts``), and a resumed loop that redoes only what was lost."""

import json

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.judge import JUDGES
from ratchet.loop.manifest import watch
from ratchet.loop.run import run_loop

from conftest import HashJudge, eval_outcomes, read_lines, tiny_run_overrides as _overrides

pytestmark = pytest.mark.slow  # two whole loop rounds


@pytest.fixture
def parity_judge(monkeypatch):
    """About half right, by revision step, so the evaluations score differently (conftest.HashJudge)."""
    monkeypatch.setitem(JUDGES, "parity", lambda: HashJudge(lambda p: f"{p['id']}/{p.get('revision', 0)}/"))


def _srpo(tmp_path, tiny_model_dir, *extra):
    return _overrides(tmp_path, tiny_model_dir) + [
        "name=srpo", "judge.name=parity", "train.loss=srpo", "rounds=2", "revise.revisions=2",
        "evaluate.gate_on=last_revision", "revise.train_drafts=2", "task.heldout_prompts=6",
        "train.max_length=512", *extra]  # a revision prompt holds the template: ~450 byte tokens


def test_srpo_rounds_evaluate_every_revision_and_gate_on_the_chosen_one(tmp_path, tiny_model_dir, parity_judge):
    summary = run_loop(load_config(None, _srpo(tmp_path, tiny_model_dir)), progress=False)
    run = tmp_path / "runs" / "srpo"
    assert summary["gate_on"] == "last_revision" and summary["gate_eval"] == "eval"
    for r, m in enumerate(summary["rounds"]):
        eval_dir = run / f"round_{r}" / "eval"
        # the metric of each revision is that of its own judged answers, revision 0 the draft
        for k in range(3):
            step = eval_dir / f"revision_{k}" if k else eval_dir
            verdicts = eval_outcomes(step)
            assert len(verdicts) == 6 and m[f"revision_{k}"] == pytest.approx(sum(verdicts.values()) / 6)
        assert m["revision_0"] == m["accuracy"]
        revised = read_lines(eval_dir / "revision_2" / "answers.jsonl")
        assert all(len(row["completions"]) == 1 for row in revised)
        assert m["gated"]["eval"] == "eval" and m["gated"]["revision"] == 2 and m["gated"]["value"] == m["revision_2"]
    assert len({summary["rounds"][0][f"revision_{k}"] for k in range(3)}) > 1  # else the test tells nothing
    # the gate compares revision 2 with revision 2, problem by problem
    assert summary["metric_start"] == summary["rounds"][0]["revision_2"]
    r1 = summary["rounds"][1]
    gate = r1["gate"]
    assert gate["compared_with"] == 0 and gate["delta"] == pytest.approx(r1["revision_2"] - summary["metric_start"])
    now, before = eval_outcomes(run / "round_1" / "eval" / "revision_2"), eval_outcomes(run / "round_0" / "eval" / "revision_2")
    assert gate["n_paired"] == 6
    assert gate["discordant"] == [sum(now[p] and not before[p] for p in now),
                                  sum(before[p] and not now[p] for p in now)]
    assert json.loads((run / "round_1" / "metrics.json").read_text())["gate"] == gate
    report = (run / "report.html").read_text()  # a table of every round's revisions, and their plot
    assert "Held-out metric per revision" in report and "<th>revision_2</th>" in report
    assert (run / "plots" / "revisions.png").exists()


def test_srpo_rounds_train_on_the_models_own_revisions(tmp_path, tiny_model_dir, parity_judge):
    summary = run_loop(load_config(None, _srpo(tmp_path, tiny_model_dir, "name=own")), progress=False)
    r1 = tmp_path / "runs" / "own" / "round_1"
    samples = {row["id"]: row for row in read_lines(r1 / "completions.jsonl")}
    revised = read_lines(r1 / "revisions.jsonl")
    assert revised and all(len(row["completions"]) == len(row["draft_indices"]) <= 2 for row in revised)
    verdicts = {row["id"]: row["correct"] for row in read_lines(r1 / "revision_judgments.jsonl")}
    draft_verdicts = {row["id"]: row["correct"] for row in read_lines(r1 / "judgments.jsonl")}
    expected = []  # (chosen, rejected) of every draft and revision the verifier tells apart
    for row in revised:
        for n, i in enumerate(row["draft_indices"]):
            draft, rev = samples[row["id"]]["completions"][i]["text"], row["completions"][n]["text"]
            ok_d, ok_r = draft_verdicts[row["id"]][i], verdicts[row["id"]][n]
            if ok_d != ok_r and draft != rev:
                expected.append((rev, draft) if ok_r else (draft, rev))
    pairs = read_lines(r1 / "pairs_with_revisions.jsonl")
    own = [(p["chosen"], p["rejected"]) for p in pairs if p.get("origin") == "revision"]
    assert own == expected and len(own) > 0  # 24 revisions of a random model: some change the verdict
    assert pairs[:len(pairs) - len(own)] == read_lines(r1 / "pairs.jsonl")  # the sample pairs first, unchanged
    assert summary["rounds"][1]["revision_pairs"] == len(own)
    assert json.loads((r1 / "train" / "train_summary.json").read_text())["pairs"] == len(pairs)


def test_srpo_rounds_resume_redoes_only_lost_stages(tmp_path, tiny_model_dir, parity_judge):
    o = _srpo(tmp_path, tiny_model_dir, "name=again")
    first = run_loop(load_config(None, o), progress=False)
    r2 = tmp_path / "runs" / "again" / "round_2"
    manifest = json.loads((r2 / "manifest.json").read_text())
    del manifest["stages"]["evaluate_revisions"]  # killed while revising round 2's answers
    (r2 / "manifest.json").write_text(json.dumps(manifest))
    seen = []
    with watch(lambda stage, skipped: seen.append((stage, skipped))):
        second = run_loop(load_config(None, o), progress=False)
    assert [s for s, skipped in seen if not skipped] == ["evaluate_revisions"]
    assert {s for s, _ in seen} >= {"evaluate", "evaluate_revisions", "revise_samples", "judge_revisions",
                                    "revision_pairs", "train"}
    assert second["rounds"] == first["rounds"]


def test_gate_on_and_train_drafts_are_checked_at_load(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="evaluate.gate_on: expected one of draft, best_revision, last_revision"):
        load_config(None, ["evaluate.gate_on=best"])
    with pytest.raises(ConfigError, match="revise.train_drafts: expected >= 0"):
        load_config(None, ["revise.train_drafts=-1"])
    with pytest.raises(ConfigError, match="revision pairs train objectives on revision data"):
        load_config(None, ["revise.train_drafts=2", "train.loss=dpo"])
