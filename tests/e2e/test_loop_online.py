"""On-policy rounds in the loop on the tiny model: RLOO (judge reward and self-likelihood reward) and
SCoRe (stage I then II, two-attempt evaluation); no pair stage, manifests, resume."""

import json

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.loop import online_round
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides as _overrides


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("reward", ["judge", "self_loglik"])
@pytest.mark.slow
def test_rloo_round_trains_on_its_prompts_and_resumes(tmp_path, tiny_model_dir, length_judge, reward, monkeypatch):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=rl", "train.loss.name=rloo", f"online.reward={reward}",
                                                "train.reference=initial"]
    summary = run_loop(load_config(None, o), progress=False)
    r1 = tmp_path / "runs" / "rl" / "round_1"
    stages_done = json.loads((r1 / "manifest.json").read_text())["stages"]
    assert set(stages_done) == {"prompts", "train", "evaluate"}
    assert not (r1 / "pairs.jsonl").exists() and not (r1 / "completions.jsonl").exists()
    rollouts = _lines(r1 / "train" / "rollouts.jsonl")
    assert len(rollouts) == 4 and all(len(r["completions"]) == 3 for r in rollouts)  # 4 prompts x k=3
    if reward == "self_loglik":  # log-likelihood per token: negative, no ground truth
        assert all(s < 0 for r in rollouts for s in r["scores"]) and rollouts[0]["correct"] == [None] * 3
    metrics = json.loads((r1 / "metrics.json").read_text())
    # the length judge gives scores, no verdicts: the held-out metric is its mean score
    assert {"mean_score", "train_loss", "rewards_first", "rewards_last", "rewards_mean", "samples"} <= set(metrics)
    assert metrics["samples"] == 12 and [r["round"] for r in summary["rounds"]] == [0, 1]
    assert (r1 / "train" / "model" / "model.safetensors").exists()

    calls = []
    monkeypatch.setattr(online_round, "train_online_stage", lambda *a, **k: calls.append("train"))
    run_loop(load_config(None, o), progress=False)
    assert calls == []  # finished stages are skipped


@pytest.mark.slow
def test_score_rounds_run_stage_one_then_two_and_evaluate_both_attempts(tmp_path, tiny_model_dir, length_judge):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=score", "train.loss.name=score", "rounds=2",
                                                "online.correction_instruction=Check and fix it."]
    summary = run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / "score"
    assert [r.get("score_stage") for r in summary["rounds"]] == [None, 1, 2]
    for r in (0, 1, 2):
        m = json.loads((run / f"round_{r}" / "eval" / "metrics.json").read_text())
        assert {"mean_score", "accuracy_t1", "accuracy_t2", "wrong_to_right", "right_to_wrong"} <= set(m)
    second = _lines(run / "round_1" / "eval" / "second" / "answers.jsonl")
    first = _lines(run / "round_1" / "eval" / "answers.jsonl")
    assert [m["role"] for m in second[0]["messages"]] == ["user", "assistant", "user"]
    assert second[0]["messages"][1]["content"] == first[0]["completions"][0]["text"]
    assert second[0]["messages"][2]["content"] == "Check and fix it."
    rollouts = _lines(run / "round_2" / "train" / "rollouts.jsonl")
    assert all(len(r["completions"]) == 3 and len(r["second_completions"]) == 3 for r in rollouts)
    metrics = _lines(run / "round_1" / "train" / "train_metrics.jsonl")
    assert {"first_rewards", "second_rewards", "wrong_to_right", "first_kl"} <= set(metrics[0])


def test_score_stage_is_not_a_recipe_parameter(tmp_path, tiny_model_dir, length_judge):
    cfg = load_config(None, _overrides(tmp_path, tiny_model_dir) + ["train.loss.name=score", "train.loss.stage=1"])
    with pytest.raises(ConfigError, match="online.stage_one_rounds"):
        online_round.objective_params(cfg, 1)
