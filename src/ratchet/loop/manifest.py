"""Per-round manifests: which stage ran with which config and inputs, and what it wrote.

``round_<r>/manifest.json`` maps each finished stage to ``{"key", "config", "inputs", "outputs"}``
where inputs and outputs are ``{path: sha256}``. ``run_stage`` skips a stage whose key (a hash of
its config and its inputs' hashes) matches and whose outputs are intact; a finished stage whose
key no longer matches is a ``StaleStageError`` naming what changed, never a silent mix of old
and new files. A stage killed half-way has no entry (entries are written after the outputs,
atomically), so it simply runs again; ``claim`` lets such a stage keep its partial work (training
checkpoints) only when it is run again with the same config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from ratchet.data.records import file_hash, write_json


class StaleStageError(RuntimeError):
    pass


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"stages": {}}


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def claim(directory: Path, config: dict) -> None:
    """Keep what an interrupted run of a stage left in ``directory`` (e.g. training checkpoints to
    resume from) only if that run had the same ``config``; otherwise empty the directory, so a
    stage never continues work started under another recipe. Records ``config`` in
    ``directory/stage_config.json``."""
    marker = directory / "stage_config.json"
    wanted = json.loads(json.dumps(config, sort_keys=True, default=str))
    if directory.exists() and (not marker.exists() or json.loads(marker.read_text()) != wanted):
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(marker, wanted)


_observers: list[Callable[[str, bool], None]] = []


@contextlib.contextmanager
def watch(observer: Callable[[str, bool], None]):
    """Call ``observer(stage, skipped)`` as each stage starts or is skipped (the loop's status line)."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _tell(stage: str, skipped: bool) -> None:
    for observer in _observers:
        observer(stage, skipped)


def run_stage(round_dir: Path, stage: str, config: dict, inputs: list[Path], outputs: list[Path],
              fn: Callable[[], object]) -> bool:
    """Run ``fn`` unless this stage already finished with the same config and inputs.

    Returns True if the stage ran, False if it was skipped as finished."""
    manifest_path = round_dir / "manifest.json"
    manifest = _load(manifest_path)
    ins = {str(p): file_hash(p) for p in inputs}
    key = hashlib.sha256(json.dumps([config, ins], sort_keys=True, default=str).encode()).hexdigest()[:16]
    done = manifest["stages"].get(stage)
    if done is not None:
        if done["key"] != key:
            changes = _diff(done["config"], json.loads(json.dumps(config, default=str)))
            changes += [f"input {p} changed" for p in ins if done["inputs"].get(p) != ins[p]]
            raise StaleStageError(
                f"{round_dir}/{stage} finished earlier with a different recipe or inputs "
                f"({'; '.join(changes) or 'inputs differ'}). Use a new run name, or delete {round_dir} "
                "to redo it.")
        if all(Path(p).exists() and file_hash(Path(p)) == h for p, h in done["outputs"].items()):
            _tell(stage, True)
            return False
    _tell(stage, False)
    started = time.time()
    fn()
    manifest = _load(manifest_path)  # fn may have run nested stages
    manifest["stages"][stage] = {"key": key, "config": config, "inputs": ins,
                                 "outputs": {str(p): file_hash(p) for p in outputs},
                                 "seconds": round(time.time() - started, 1)}
    write_json(manifest_path, manifest)
    return True


def stage_seconds(round_dir: Path) -> dict:
    """Seconds each stage of a round took when it ran (stages skipped on a resume keep their first time)."""
    return {stage: done.get("seconds") for stage, done in _load(Path(round_dir) / "manifest.json")["stages"].items()}
