"""The same entry point under ``accelerate launch --multi_gpu --num_processes 2`` on a machine
without GPUs (DDP over gloo) gives the losses and weights of one process with the same global
batch (4 pairs per step). (``accelerate launch --cpu`` starts one process unless given an MPI
hostfile; ``--multi_gpu`` uses torchrun, and the trainer asks accelerate for CPU DDP.)"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _kit import metrics, run, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
CHILD = Path(__file__).parent / "_child.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_model_dir):
    kw = {"epochs": 2, "max_grad_norm": 0.5, "checkpoint_every": 0}
    one_pairs = write_pairs(tmp_path / "one" / "pairs.jsonl", 9)  # steps of 4, 4 and 1 pair per epoch
    two_pairs = tmp_path / "two" / "pairs.jsonl"
    two_pairs.parent.mkdir()
    shutil.copy(one_pairs, two_pairs)  # its own copy: the reference log-probs are computed in shards
    run(tiny_model_dir, one_pairs, tmp_path / "one" / "out", batch_size=4, **kw)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           str(CHILD), str(tiny_model_dir), str(two_pairs), str(tmp_path / "two" / "out"),
           json.dumps({"batch_size": 2, **kw})]
    # its own session, so a timeout ends the launcher and both workers (a lone worker would wait forever)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("two-process training did not finish in 300 s")
    assert proc.returncode == 0, err[-4000:]

    one, two = metrics(tmp_path / "one" / "out"), metrics(tmp_path / "two" / "out")
    assert len(one) == len(two) == 6
    for a, b in zip(one, two):
        for k in ("loss", "grad_norm", "margins", "accuracy", "chosen_logps", "lr"):
            assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), (a["step"], k, a[k], b[k])
    ref_one, ref_two = (load_file(str(next(p.parent.glob("pairs.jsonl.ref-*.safetensors"))))
                        for p in (one_pairs, two_pairs))
    for k in ref_one:
        torch.testing.assert_close(ref_two[k], ref_one[k], atol=1e-5, rtol=0)
    w_one = load_file(str(tmp_path / "one" / "out" / "model" / "model.safetensors"))
    w_two = load_file(str(tmp_path / "two" / "out" / "model" / "model.safetensors"))
    for name in w_one:
        torch.testing.assert_close(w_two[name], w_one[name], atol=1e-5, rtol=1e-4)
