"""Bradley-Terry reward model (``train.reward_model``, ``ratchet train-rm``) on the tiny Llama: a
pairs file whose chosen answer always says "good" is learnt (held-out pairwise accuracy), and the
output directory is a checkpoint the ``reward_model`` judge loads and ranks with."""

import json

import pytest

from ratchet import cli
from ratchet.data.records import RecordError, write_jsonl
from ratchet.judge import build_judge
from ratchet.train.reward_model import split_pairs, train_reward_model


def _pairs(path, n=32, good="good", bad="bad"):
    # chosen and rejected differ systematically: "good" vs "bad" after the same number
    return write_jsonl(path, [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Rate {i}."}],
                               "chosen": f"{good} {i}", "rejected": f"{bad} {i}"} for i in range(n)])


def test_split_is_seeded_and_keeps_both_parts():
    rows = [{"i": i} for i in range(10)]
    train, held = split_pairs(rows, 0.2, seed=3)
    assert len(held) == 2 and len(train) == 8 and sorted(r["i"] for r in train + held) == list(range(10))
    assert split_pairs(rows, 0.2, seed=3) == (train, held) and split_pairs(rows, 0.0, seed=3)[1] == []
    with pytest.raises(RecordError, match="1 pair"):
        split_pairs(rows[:1], 0.5, seed=0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_pairs(rows, 1.0, seed=0)


@pytest.mark.parametrize("good, bad", [("good", "bad"), ("bad", "good")])
def test_trained_reward_model_prefers_chosen_and_loads_as_the_judge(tmp_path, tiny_model_dir, good, bad):
    # both directions: the random head happens to prefer one word before training, so one of the two
    # runs must learn against its initial preference
    pairs = _pairs(tmp_path / "pairs.jsonl", good=good, bad=bad)
    summary = train_reward_model(str(tiny_model_dir), pairs, tmp_path / "rm", lr=3e-3, epochs=3, batch_size=8,
                                 max_length=64, heldout_fraction=0.25, seed=0, device="cpu")
    assert summary["train_pairs"] == 24 and summary["heldout_pairs"] == 8
    assert summary["heldout_accuracy"] > 0.5 and summary["train_loss"] < summary["train_loss_per_epoch"][0]
    assert summary["heldout_loss"] < summary["heldout_loss_initial"]
    assert json.loads((tmp_path / "rm" / "rm_summary.json").read_text()) == summary

    judge = build_judge("reward_model", {"model": str(tmp_path / "rm" / "model"), "device": "cpu"})
    wins = 0
    for i in range(40, 50):  # prompts never trained on
        chosen, rejected = judge.judge({"id": "x", "messages": [{"role": "user", "content": f"Rate {i}."}]},
                                       [f"{good} {i}", f"{bad} {i}"])
        wins += chosen.score > rejected.score
    assert wins > 5


def test_cli_train_rm_lora_and_bad_pairs(tmp_path, tiny_model_dir, capsys):
    pairs = _pairs(tmp_path / "pairs.jsonl", n=8)
    assert cli.main(["train-rm", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--out", str(tmp_path / "rm"),
                     "--lora-r", "4", "--epochs", "1", "--max-length", "48", "model.device=cpu"]) == 0
    summary = json.loads((tmp_path / "rm" / "rm_summary.json").read_text())
    assert summary["lora"]["r"] == 4 and (tmp_path / "rm" / "model" / "config.json").exists()
    assert "adapter_config.json" not in {p.name for p in (tmp_path / "rm" / "model").iterdir()}  # merged
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "messages": [{"role": "user", "content": "q"}],
                                                "completion": "y", "label": True}])
    assert cli.main(["train-rm", "--model", str(tiny_model_dir), "--pairs", str(bad), "--out",
                     str(tmp_path / "rm2")]) == 2
    assert "bad.jsonl:1: not a preference pair" in capsys.readouterr().err
