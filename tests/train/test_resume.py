"""Never lose a run: a process killed while writing a checkpoint resumes from the last complete
one and continues exactly (same losses, same weights) as a run that was never interrupted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _kit import metrics, one_thread, run, write_pairs

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

CHILD = Path(__file__).parent / "_child.py"
KW = {"batch_size": 2, "epochs": 2, "checkpoint_every": 2, "keep_checkpoints": 2, "dropout": 0.2}


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
