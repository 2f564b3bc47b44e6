"""Reward-augmented pairs through the loop on the tiny model: the held-out prompts are asked with
and without the goal the model was trained with (the highest score, worded and placed as in its
pairs), both reported, and the gate reads the goal-conditioned answers."""

import pytest

from ratchet.config import load_config
from ratchet.data.pairing import RA_TEMPLATES
from ratchet.judge import JUDGES
from ratchet.loop.run import run_loop

from conftest import HashJudge, eval_outcomes, read_lines, tiny_run_overrides as _overrides

pytestmark = pytest.mark.slow  # a whole loop round


@pytest.fixture
def hash_judge(monkeypatch):
    """About half right, by turns: a goal is a system turn, so the evaluations score differently (conftest.HashJudge)."""
    monkeypatch.setitem(JUDGES, "prompthash", lambda: HashJudge(lambda p: f"{p['id']}/{len(p['messages'])}/"))


def test_reward_augmented_round_is_evaluated_with_and_without_its_goal(tmp_path, tiny_model_dir, hash_judge):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=ra", "judge.name=prompthash", "pair.strategy=reward_augmented",
                                                "task.heldout_prompts=8"]
    summary = run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / "ra"
    goal = {"role": "system", "content": RA_TEMPLATES["unit"].format(score="1")}  # a 0-1 judge's top: 1
    plain = read_lines(run / "heldout.jsonl")
    assert read_lines(run / "heldout_goal.jsonl") == [{**r, "messages": [goal] + r["messages"]} for r in plain]
    trained = read_lines(run / "round_1" / "pairs.jsonl")
    assert {p["messages"][0]["content"] for p in trained} <= {goal["content"], goal["content"].replace("1.", "0.")}
    for r, m in enumerate(summary["rounds"]):
        without, with_goal = eval_outcomes(run / f"round_{r}" / "eval"), eval_outcomes(run / f"round_{r}" / "eval_goal")
        assert m["accuracy"] == pytest.approx(sum(without.values()) / 8)  # without the goal: as before
        assert m["goal"]["accuracy"] == pytest.approx(sum(with_goal.values()) / 8)
        assert m["gated"]["eval"] == "eval_goal" and m["gated"]["value"] == m["goal"]["accuracy"]
    assert summary["rounds"][0]["accuracy"] != summary["rounds"][0]["goal"]["accuracy"]  # else the test tells nothing
    assert summary["gate_eval"] == "eval_goal" and summary["metric_start"] == summary["rounds"][0]["goal"]["accuracy"]
    gate = summary["rounds"][1]["gate"]  # goal-conditioned answers against goal-conditioned answers
    now, before = eval_outcomes(run / "round_1" / "eval_goal"), eval_outcomes(run / "round_0" / "eval_goal")
    assert gate["n_paired"] == 8
    assert gate["discordant"] == [sum(now[p] and not before[p] for p in now),
                                  sum(before[p] and not now[p] for p in now)]
    assert gate["delta"] == pytest.approx(summary["rounds"][1]["goal"]["accuracy"] - summary["metric_start"])
