"""Self-taught rounds on the tiny model: STaR (all correct samples + SFT) and SFT-sharpening
(best-of-N by the model's own log-likelihood), through the shipped recipes; the self-score stage
against a direct computation."""

import json
from pathlib import Path

import pytest
import torch

from ratchet import cli
from ratchet.data.tokenize import completion_ids, prompt_ids
from ratchet.generate.score import sequence_logprobs
from ratchet.judge import JUDGES
from ratchet.judge.base import Judgment

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class LongestCorrect:
    """A random model is never right: call the longest completion(s) of a prompt correct."""

    def judge(self, prompt, completions):
        top = max(len(c) for c in completions)
        return [Judgment(score=float(len(c) == top), correct=len(c) == top) for c in completions]


@pytest.fixture
def longest_judge(monkeypatch):
    monkeypatch.setitem(JUDGES, "longest", LongestCorrect)


def _tiny(tmp_path, model_dir, name):
    return [f"runs_dir={tmp_path / 'runs'}", f"name={name}", f"model={model_dir}", "task.train_prompts=4",
            "task.heldout_prompts=3", "generate.k=3", "generate.max_new_tokens=6", "generate.temperature=1.0",
            "evaluate.max_new_tokens=6", "train.batch_size=2", "train.max_length=400", "judge.name=longest",
            "train.lr=1e-3", "pair.drop_truncated=false"]  # 6 tokens cut nearly every random-model sample


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_star_recipe_two_rounds(tmp_path, tiny_model_dir, longest_judge, capsys):
    argv = ["loop", str(RECIPES / "arithmetic-star.yaml"), *_tiny(tmp_path, tiny_model_dir, "star"), "rounds=2"]
    assert cli.main(argv) == 0
    run = tmp_path / "runs" / "star"
    for r in (1, 2):
        rd = run / f"round_{r}"
        rows, judged = _lines(rd / "pairs.jsonl"), {j["id"]: j for j in _lines(rd / "judgments.jsonl")}
        comps = {c["id"]: c["completions"] for c in _lines(rd / "completions.jsonl")}
        # every distinct correct sample of every prompt, nothing else
        expected = sorted((pid, c["text"]) for pid, cs in comps.items()
                          for c, ok in zip(cs, judged[pid]["correct"]) if ok)
        assert sorted((row["id"], row["completion"]) for row in rows) == sorted(set(expected))
        assert all(row["label"] is True and row["selection"] == "all_correct" for row in rows)
        assert "rejected" not in rows[0] and (rd / "train" / "model" / "model.safetensors").exists()
        summary = json.loads((rd / "train" / "train_summary.json").read_text())
        assert summary["pairs"] == len(rows) and summary["final"]["loss"] > 0  # SFT: -log pi(y) > 0
        assert not (rd / "self_scores.jsonl").exists()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("loop: rounds=2 accuracy ") and " kept=" in last and " minutes=" in last


@pytest.mark.slow
def test_sharpen_recipe_selects_the_most_likely_sample(tmp_path, tiny_model_dir, longest_judge):
    argv = ["loop", str(RECIPES / "arithmetic-sharpen-sft.yaml"), *_tiny(tmp_path, tiny_model_dir, "sharp"),
            "rounds=1"]
    assert cli.main(argv) == 0
    rd = tmp_path / "runs" / "sharp" / "round_1"
    scores = {s["id"]: s for s in _lines(rd / "self_scores.jsonl")}
    comps = {c["id"]: c["completions"] for c in _lines(rd / "completions.jsonl")}
    rows = _lines(rd / "pairs.jsonl")
    assert sorted(row["id"] for row in rows) == sorted(comps)  # one per prompt, correct or not
    for row in rows:
        lps = scores[row["id"]]["logprobs"]
        assert len(lps) == 3 and all(lp < 0 for lp in lps)
        assert row["logprob"] == max(lps) and row["selection"] == "self_loglik"
        assert row["completion"] == comps[row["id"]][lps.index(max(lps))]["text"]
    stages_done = json.loads((rd / "manifest.json").read_text())["stages"]
    assert {"self_score", "pair", "train"} <= set(stages_done)
    assert str(rd / "self_scores.jsonl") in stages_done["pair"]["inputs"]


def test_sequence_logprobs_match_a_direct_computation(tiny, tiny_tokenizer):
    model, tok = tiny
    items = [([{"role": "user", "content": "2+2?"}], "Answer: 4", True),
             ([{"role": "user", "content": "a longer question"}], "x", False),
             ([{"role": "user", "content": "2+2?"}], "", True)]
    got = sequence_logprobs(model, tok, items, batch_size=2)
    for (messages, text, complete), (lp, n) in zip(items, got):
        p, c = prompt_ids(tok, messages), completion_ids(tok, text, complete)
        assert n == len(c) and (c[-1] == tok.eos_token_id) == complete
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0].float().log_softmax(-1)
        direct = sum(logits[len(p) - 1 + i, tok_id].item() for i, tok_id in enumerate(c))
        assert lp == pytest.approx(direct, abs=1e-4)


def test_sequence_logprobs_build_no_autograd_graph(tiny, tiny_tokenizer, monkeypatch):
    """Scoring is inference: called where gradients are on (a trainer's process), it must not keep
    every activation for a backward that never comes."""
    from ratchet.generate import score

    seen = []
    original = score.completion_logps
    monkeypatch.setattr(score, "completion_logps",
                        lambda *a, **kw: seen.append(torch.is_grad_enabled()) or original(*a, **kw))
    model, tok = tiny
    with torch.enable_grad():
        sequence_logprobs(model, tok, [([{"role": "user", "content": "2+2?"}], "Answer: 4", True)])
    assert seen == [False]
