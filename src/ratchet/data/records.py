"""JSONL files, the currency between stages: read with row-numbered errors, write atomically.

Record shapes (one JSON object per line):

- prompts.jsonl      ``{"id", "task", "messages": [{"role", "content"}], "answer"?}``
- completions.jsonl  ``{"id", "messages", "completions": [{"text", "num_tokens", "finish_reason"}], "sampling"}``
- judgments.jsonl    ``{"id", "scores": [float], "correct": [bool|null], "details": [dict]}``
- pairs.jsonl        ``{"id", "messages", "chosen", "rejected", "chosen_score", "rejected_score",
                        "chosen_complete", "rejected_complete"}``
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence


class RecordError(ValueError):
    """A file between stages is malformed or does not fit its reader; the message names the file,
    row and key. The CLI prints it as one line (exit code 2), not a traceback."""


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict]:
    """Read every row; a malformed row or a missing required key names the file, row and key."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file does not exist")
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise RecordError(f"{path}:{n}: missing key(s) {missing}; expected {list(required)}")
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows to ``path`` through a temporary file and a rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: dict) -> Path:
    """Write one JSON document atomically (metrics, manifests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
    return path


def file_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents), hex."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
