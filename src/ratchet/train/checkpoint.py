"""Checkpoints that survive a crash at any moment: the only module that writes or reads training state
(and, with ``save_model`` and ``finish``, the trained model and the run's summary).

A checkpoint is a directory ``<out>/checkpoints/step-NNNNNNN/`` holding what
``accelerator.save_state`` writes (weights, optimizer, registered scheduler, every process's RNG
states; sharded under FSDP/DeepSpeed) plus ``trainer_state.json`` (step, data position,
counters). It is written as ``.step-NNNNNNN.tmp/``, ``trainer_state.json`` last, flushed to disk,
then renamed: a directory named ``step-*`` with a ``trainer_state.json`` is always complete. Older
checkpoints are deleted only after the new one is in place. Assumes a filesystem shared by all
processes (one machine, or a network filesystem).

A run's life in a training directory ``out``: ``finished(out)`` says whether it already ended (then
resuming has nothing to do), ``resume`` restores the newest checkpoint, ``save`` writes one every
so many steps, and ``finish`` writes ``out/model``, then ``out/train_summary.json``, then deletes
``out/checkpoints``: a crash before the summary is written leaves a run that resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ratchet.data.records import write_json

DIR = "checkpoints"
"""A training directory's checkpoints: ``<out>/checkpoints``."""
SUMMARY_FILE = "train_summary.json"
"""A finished run's summary, written last: ``<out>/train_summary.json``."""
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"step-(\d+)")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")) + [path]:
        _fsync(p)


def complete(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def latest(root: Path) -> Path | None:
    found = complete(root)
    return found[-1] if found else None


def save(accelerator, root: Path, step: int, state: dict, *, keep: int) -> Path:
    """Write checkpoint ``step`` atomically (collective: every process calls it)."""
    final, tmp = root / f"step-{step:07d}", root / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)
        if final.exists():  # re-saving a step after a resume: same content
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)  # the rename itself
        for old in complete(root)[:-max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path, run: dict) -> dict:
    """Restore everything ``save`` wrote into the prepared objects; return the trainer state.

    ``run`` describes what must not change for the resumed run to continue the same trajectory
    (pairs file, step arithmetic, ...); a difference is an error naming it."""
    state = json.loads((path / STATE_FILE).read_text())
    changed = [f"{k} was {state['run'].get(k)!r}, now {v!r}" for k, v in run.items() if state["run"].get(k) != v]
    if changed:
        raise ValueError(f"cannot resume from {path}: " + "; ".join(changed))
    accelerator.load_state(str(path))
    return state


def remove_partial(root: Path) -> None:
    """Delete half-written checkpoints left by a crash (main process only)."""
    if root.is_dir():
        for p in root.glob(".step-*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


def save_model(accelerator, policy, tokenizer, target: Path) -> None:
    """The trained weights (safetensors) and tokenizer into ``target`` (collective: every process calls
    it). ``policy`` is the prepared ``train.step.PolicyLogps``: its ``model.`` prefix is dropped."""
    weights_state = accelerator.get_state_dict(policy)  # collective under FSDP/DeepSpeed
    if accelerator.is_main_process:
        inner = accelerator.unwrap_model(policy).model
        inner.save_pretrained(target, state_dict={k.removeprefix("model."): v for k, v in weights_state.items()},
                              safe_serialization=True)
        tokenizer.save_pretrained(target)
    accelerator.wait_for_everyone()


def finished(out_dir: Path) -> dict | None:
    """The summary of a run that ended in ``out_dir`` (its summary and model written, no checkpoint
    left), else None."""
    summary = out_dir / SUMMARY_FILE
    if summary.exists() and (out_dir / "model").is_dir() and not latest(out_dir / DIR):
        return json.loads(summary.read_text())
    return None


def resume(accelerator, root: Path, run: dict) -> dict | None:
    """The trainer state of the newest complete checkpoint under ``root``, restored into the prepared
    objects (``load``: ``run`` must match), after deleting half-written ones; None if there is none
    (collective: every process calls it)."""
    if accelerator.is_main_process:
        remove_partial(root)
    accelerator.wait_for_everyone()
    last = latest(root)
    if last is None:
        return None
    state = load(accelerator, last, run)
    accelerator.print(f"train: resumed from {last} (step {state['step']} of {run['total_steps']})")
    return state


def finish(accelerator, policy, tokenizer, out_dir: Path, summary: dict) -> None:
    """The end of a run (collective): the model into ``out_dir/model`` (``save_model``), then the
    summary, then the checkpoints are no longer needed."""
    save_model(accelerator, policy, tokenizer, out_dir / "model")
    if accelerator.is_main_process:
        write_json(out_dir / SUMMARY_FILE, summary)
        shutil.rmtree(out_dir / DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
