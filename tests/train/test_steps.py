"""Step arithmetic: how a global batch is cut, and the invariant that cutting does not matter
(batch 8 x accum 1 == batch 4 x accum 2 == batch 2 x accum 4 + a partial last step)."""

import pytest
import torch
from safetensors.torch import load_file

from ratchet.train.batches import prepare_pairs, split_step

from _kit import metrics, pair_rows, run, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_step_counts_fillers_and_token_budget(tiny_tokenizer):
    examples = prepare_pairs(pair_rows(11), tiny_tokenizer, max_length=256).examples
    batch = list(range(11))
    one = split_step(examples, batch, batch_size=4, num_processes=1, process_index=0)
    assert [len(m.indices) for m in one.micro] == [4, 4, 3] and one.global_pairs == 11
    two = [split_step(examples, batch, batch_size=4, num_processes=2, process_index=r) for r in (0, 1)]
    assert len(two[0].micro) == len(two[1].micro) == 2  # the same number of backward passes everywhere
    covered = sorted(i for s in two for m in s.micro for i, w in zip(m.indices, m.weights) if w)
    assert covered == batch
    # one pair left for two processes: the second gets a zero-weight filler
    last = [split_step(examples, [5], batch_size=4, num_processes=2, process_index=r) for r in (0, 1)]
    assert last[0].micro[0].weights == [1.0] and last[1].micro[0].weights == [0.0]
    # a token budget cuts further, keeping counts equal across processes
    longest = max(e.length for e in examples)
    cut = [split_step(examples, batch, batch_size=8, num_processes=2, process_index=r, max_tokens=longest)
           for r in (0, 1)]
    assert len(cut[0].micro) == len(cut[1].micro) >= 5
    assert all(len(m.indices) == 1 for s in cut for m in s.micro)


def test_grad_accum_equivalence(tmp_path, tiny_model_dir):
    """Same global batch, cut differently: same losses, same weights (TRL tests/invariant style)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 20)
    runs = {}
    for bs, accum in ((8, 1), (4, 2), (2, 4)):
        out = tmp_path / f"b{bs}x{accum}"
        summary = run(tiny_model_dir, pairs, out, batch_size=bs, grad_accum=accum, max_grad_norm=0.5)
        assert summary["steps"] == 3 and summary["global_batch"] == 8  # 8 + 8 + a partial step of 4
        runs[(bs, accum)] = (metrics(out), load_file(str(out / "model" / "model.safetensors")))
    ref_rows, ref_w = runs[(8, 1)]
    assert ref_rows[-1]["lr"] > 0 and len(ref_rows) == 3
    for key, (rows, w) in runs.items():
        for a, b in zip(rows, ref_rows):
            for k in ("loss", "grad_norm", "margins", "chosen_logps", "lr"):
                assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k])), (key, a["step"], k, a[k], b[k])
        for name in ref_w:
            torch.testing.assert_close(w[name], ref_w[name], atol=2e-6, rtol=1e-5)


def test_schedule_steps_once_per_optimizer_step(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 10)
    out = tmp_path / "run"
    summary = run(tiny_model_dir, pairs, out, batch_size=2, grad_accum=2, epochs=2, lr=1e-3, warmup_ratio=0.25)
    rows = metrics(out)
    # 10 pairs, global batch 4: 3 steps per epoch (the last one partial and still synchronised)
    assert summary["steps"] == len(rows) == 6 and [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]
    lrs = [r["lr"] for r in rows]  # warm-up of int(0.25 * 6) = 1 step, then linear decay to 0
    expected = [0.0] + [1e-3 * (6 - s) / 5 for s in range(1, 6)]
    assert all(abs(a - b) < 1e-12 for a, b in zip(lrs, expected)), lrs
