"""Never lose a run: a process killed while writing a checkpoint resumes from the last complete
one and continues exactly (same losses, same weights) as a run that was never interrupted; and
``ratchet train --resume`` and the loop's train stage continue from the last checkpoint (there a run
stops with an exception right after writing a checkpoint, and what is shown is that the flag reaches
the trainer: the next run starts from that checkpoint and its step count goes on from there)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _kit import metrics, run, write_pairs
from conftest import tiny_run_overrides as _overrides
from ratchet import cli
from ratchet.config import load_config
from ratchet.data.records import write_jsonl
from ratchet.loop.run import run_loop
from ratchet.train import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

CHILD = Path(__file__).parent / "_child.py"
KW = {"batch_size": 2, "epochs": 2, "checkpoint_every": 2, "keep_checkpoints": 2, "dropout": 0.2}


@pytest.mark.slow
def test_killed_run_resumes_exactly(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 12)  # 6 steps per epoch, 12 steps
    full = tmp_path / "uninterrupted"
    run(tiny_model_dir, pairs, full, **KW)

    crashed = tmp_path / "crashed"
    proc = subprocess.run([sys.executable, str(CHILD), str(tiny_model_dir), str(pairs), str(crashed),
                           json.dumps(KW), "--die-at-save", "10"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL during the save of step 10
    ckpts = crashed / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".step-0000010.tmp", "step-0000006", "step-0000008"]
    assert len(metrics(crashed)) == 10 and not (crashed / "model").exists()

    summary = run(tiny_model_dir, pairs, crashed, resume=True, **KW)  # from step 8: epoch 1, third batch
    assert summary["steps"] == 12
    resumed, reference = metrics(crashed), metrics(full)
    assert [r["step"] for r in resumed] == list(range(1, 13))
    for a, b in zip(resumed, reference):
        for k in ("loss", "grad_norm", "margins", "chosen_logps", "rejected_logps", "lr"):
            assert a[k] == b[k], (a["step"], k, a[k], b[k])
    w_resumed = load_file(str(crashed / "model" / "model.safetensors"))
    w_full = load_file(str(full / "model" / "model.safetensors"))
    for name in w_full:
        torch.testing.assert_close(w_resumed[name], w_full[name], atol=0, rtol=0)
    assert not ckpts.exists()  # a finished run keeps its model, not its checkpoints
    again = run(tiny_model_dir, pairs, crashed, resume=True, **KW)  # nothing left to do
    assert again["steps"] == 12


@pytest.mark.slow
def test_resume_refuses_a_changed_run(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 12)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(CHILD), str(tiny_model_dir), str(pairs), str(out),
                           json.dumps({**KW, "epochs": 1}), "--die-at-save", "4"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    write_pairs(pairs, 13)  # the pairs file changed since the checkpoint
    with pytest.raises(ValueError, match=r"cannot resume from .*step-0000002: pairs_sha256 was"):
        run(tiny_model_dir, pairs, out, resume=True, **{**KW, "epochs": 1})


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    summary = run(tiny_model_dir, pairs, tmp_path / "run", resume=True, batch_size=2)
    assert summary["steps"] == 2 and len(metrics(tmp_path / "run")) == 2


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


@pytest.mark.slow
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
