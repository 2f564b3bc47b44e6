"""``ratchet train --resume`` and the loop's train stage continue from the last checkpoint.

The kill itself is tested in ``tests/train/test_resume.py``; here a run stops (an exception) right
after writing a checkpoint, and what is shown is that the flag reaches the trainer: the next run
starts from that checkpoint and its step count goes on from there.
"""

import json

import pytest

from ratchet import cli
from ratchet.config import load_config
from ratchet.data.records import write_jsonl
from ratchet.loop.run import run_loop
from ratchet.train import checkpoint

from test_e2e_round import _overrides, length_judge  # noqa: F401  (fixture)


class Killed(Exception):
    pass


@pytest.fixture
def die_after_checkpoint(monkeypatch):
    """Append a step: the trainer stops right after writing that checkpoint, as a kill leaves it."""
    real, at = checkpoint.save, []

    def save(accelerator, root, step, state, *, keep):
        path = real(accelerator, root, step, state, keep=keep)
        if step in at:
            raise Killed(str(path))
        return path

    monkeypatch.setattr(checkpoint, "save", save)
    return at


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "train_metrics.jsonl").read_text().splitlines()]


def test_cli_train_resume_continues_from_the_checkpoint(tmp_path, tiny_model_dir, die_after_checkpoint, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"messages": [{"role": "user", "content": f"{i} + 1?"}], "chosen": f"{i + 1}", "rejected": f"{i + 2}"}
        for i in range(8)])
    out = tmp_path / "train"
    args = ["train", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--out", str(out), "train.batch_size=2",
            "train.checkpoint_every=1", "train.lr=1e-3"]
    die_after_checkpoint.append(2)
    with pytest.raises(Killed):
        cli.main(args)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    assert _steps(out) == [1, 2] and not (out / "model").exists()
    die_after_checkpoint.clear()
    capsys.readouterr()
    assert cli.main(args[:7] + ["--resume"] + args[7:]) == 0
    printed = capsys.readouterr().out
    assert f"train: resumed from {out / 'checkpoints' / 'step-0000002'} (step 2 of 4)" in printed
    assert "8 pairs, 4 steps" in printed.strip().splitlines()[-1]
    assert _steps(out) == [1, 2, 3, 4] and (out / "model").is_dir() and not (out / "checkpoints").exists()


def test_train_checkpoint_every_is_a_config_field():
    assert load_config(None, []).train.checkpoint_every == 50
    assert load_config(None, ["train.checkpoint_every=0"]).train.checkpoint_every == 0


def test_a_loop_killed_in_training_resumes_only_under_the_same_recipe(tmp_path, tiny_model_dir, length_judge,
                                                                      die_after_checkpoint, capsys):
    o = _overrides(tmp_path, tiny_model_dir) + ["task.train_prompts=8", "train.batch_size=1",
                                                "train.checkpoint_every=1"]
    for name, rerun in (("same", o), ("changed", o + ["train.lr=2e-3"])):
        die_after_checkpoint[:] = [2]
        with pytest.raises(Killed):
            run_loop(load_config(None, o + [f"name={name}"]), progress=False)
        train_dir = tmp_path / "runs" / name / "round_1" / "train"
        assert _steps(train_dir) == [1, 2]
        die_after_checkpoint.clear()
        capsys.readouterr()
        run_loop(load_config(None, rerun + [f"name={name}"]), progress=False)
        printed = capsys.readouterr().out
        n = json.loads((train_dir / "train_summary.json").read_text())["steps"]
        assert n > 2 and _steps(train_dir) == list(range(1, n + 1))
        if name == "same":  # the same recipe continues from step 2
            assert f"resumed from {train_dir / 'checkpoints' / 'step-0000002'} (step 2 of {n})" in printed
        else:  # another learning rate: the half-trained model of the old recipe is thrown away
            assert "resumed" not in printed
            marker = json.loads((train_dir / "stage_config.json").read_text())
            assert marker["train"]["lr"] == 2e-3
