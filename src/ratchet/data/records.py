"""JSONL files, the currency between stages: read with row-numbered errors, write atomically.

Record shapes (one JSON object per line):

- prompts.jsonl      ``{"id", "task", "messages": [{"role", "content"}], "answer"?}``
- completions.jsonl  ``{"id", "messages", "completions": [{"text", "num_tokens", "finish_reason"}], "sampling"}``
- judgments.jsonl    ``{"id", "scores": [float], "correct": [bool|null], "details": [dict]}``
- pairs.jsonl        ``{"id", "messages", "chosen", "rejected", "chosen_score", "rejected_score",
                        "chosen_complete", "rejected_complete"}``

A stage checks its input rows where they enter (``read_jsonl``'s ``check``: ``prompt_problem``,
``completions_problem``, ``judgments_problem``, ...; ``match_rows`` for judgments against
completions) and refuses an empty input file, before it writes anything; every write goes through
a temporary file and a rename (``staged`` for a stage that writes several files), so a failed or
killed stage never changes what a finished one left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence


class RecordError(ValueError):
    """A file between stages is malformed or does not fit its reader; the message names the file,
    row and key. The CLI prints it as one line (exit code 2), not a traceback."""


def read_jsonl(path: str | Path, required: Sequence[str] = (), *, check: Callable[[dict], str | None] | None = None,
               empty_ok: bool = True) -> list[dict]:
    """Read every row of a UTF-8 JSONL file. A row that is not UTF-8, not JSON or not an object, lacks
    a ``required`` key, or in which ``check`` (called with the required keys present) finds a
    problem (it returns the problem, else None) is a ``RecordError`` naming the file and row;
    ``empty_ok=False``: so is a file without rows (a stage's input)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file does not exist")
    rows = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{n}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                  "expected a UTF-8 JSONL file") from None
            if not line.strip():
                continue
            row = json_object(line, f"{path}:{n}")
            missing = [k for k in required if k not in row]
            if missing:
                raise RecordError(f"{path}:{n}: missing key(s) {missing}; expected {list(required)}")
            problem = check(row) if check is not None else None
            if problem:
                raise RecordError(f"{path}:{n}: {problem}")
            rows.append(row)
    if not rows and not empty_ok:
        raise RecordError(f"{path}: no rows (the file is empty); expected one JSON object per line")
    return rows


def json_object(line: str, where: str) -> dict:
    """One JSONL line parsed as a JSON object; a line that is not JSON, not an object, or holds an
    unpaired UTF-16 surrogate escape is a ``RecordError`` that starts with ``where`` (``file:row``)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(f"{where}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit, nesting too deep
        raise RecordError(f"{where}: not readable JSON ({str(e) or type(e).__name__})") from None
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "\\ud" in line.lower() and _has_lone_surrogate(row):  # valid JSON, but no text to write back
        raise RecordError(f"{where}: holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not text")
    return row


def _has_lone_surrogate(row: dict) -> bool:
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# --------------------------------------------------------------------------- row checks
# Each returns the first problem of a row (the required keys are present), or None; ``read_jsonl``
# names the file and row. Only what the stages read is checked; other keys pass as they are.


def _short(value) -> str:
    """A value's type and its start, for error messages."""
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def _number_problem(key: str, values, *, kind: str = "finite number") -> str | None:
    if not isinstance(values, list):
        return f"key {key!r}: expected a list of {kind}s, got {_short(values)}"
    for i, v in enumerate(values):
        ok = isinstance(v, int) if kind == "integer" else isinstance(v, (int, float)) and math.isfinite(v)
        if isinstance(v, bool) or not ok:
            return f"key {key!r} item {i}: expected a {kind}, got {_short(v)}"
    return None


def messages_problem(messages, key: str = "messages") -> str | None:
    """A chat: a non-empty list of ``{"role": str, "content": str}`` (under ``key``, for the message)."""
    if not isinstance(messages, list) or not messages:
        return f"key {key!r}: expected a non-empty list of {{'role': str, 'content': str}}, got {_short(messages)}"
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            return f"key {key!r} item {i}: expected {{'role': str, 'content': str}}, got {_short(m)}"
    return None


def _id_problem(row: dict) -> str | None:
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
        return f"key 'id': expected a string or an integer, got {_short(row['id'])}"
    return None


def prompt_problem(row: dict) -> str | None:
    """prompts.jsonl (``id``, ``messages`` required): the id, the chat, the task name if any."""
    if not isinstance(row.get("task", ""), (str, type(None))):
        return f"key 'task': expected a task name (string), got {_short(row['task'])}"
    return _id_problem(row) or messages_problem(row["messages"])


def completions_problem(row: dict) -> str | None:
    """completions.jsonl (``id``, ``completions`` required): a non-empty list of ``{"text": str, ...}``
    (``finish_reason`` a string if given). What a judge reads besides is the judge's to check."""
    comps = row["completions"]
    if not isinstance(comps, list) or not comps:
        return f"key 'completions': expected a non-empty list of {{'text': str, ...}}, got {_short(comps)}"
    for i, c in enumerate(comps):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            return f"key 'completions' item {i}: expected {{'text': str, ...}}, got {_short(c)}"
        if not isinstance(c.get("finish_reason"), (str, type(None))):
            return f"key 'completions' item {i}: 'finish_reason' must be a string, got {_short(c['finish_reason'])}"
    return _id_problem(row)


def chat_completions_problem(row: dict) -> str | None:
    """completions.jsonl rows a stage reads the chat of (``messages`` required too): pairing, self-scoring."""
    return completions_problem(row) or messages_problem(row["messages"])


def judgments_problem(row: dict) -> str | None:
    """judgments.jsonl (``id``, ``scores`` required): finite numbers; ``correct`` true/false/null and
    ``details``, if given, one per score."""
    problem = _id_problem(row) or _number_problem("scores", row["scores"])
    if problem:
        return problem
    n = len(row["scores"])
    correct = row.get("correct")
    if correct is not None:
        if not isinstance(correct, list) or len(correct) != n or any(c is not None and not isinstance(c, bool)
                                                                     for c in correct):
            return f"key 'correct': expected a list of {n} true/false/null (one per score), got {_short(correct)}"
    details = row.get("details")
    if details is not None and (not isinstance(details, list) or len(details) != n):
        return f"key 'details': expected a list of {n} (one per score), got {_short(details)}"
    return None


def self_scores_problem(row: dict) -> str | None:
    """self-score rows (``id``, ``logprobs``, ``num_tokens`` required): finite log-probs, integer
    token counts, as many of each."""
    problem = (_id_problem(row) or _number_problem("logprobs", row["logprobs"])
               or _number_problem("num_tokens", row["num_tokens"], kind="integer"))
    if problem is None and len(row["logprobs"]) != len(row["num_tokens"]):
        problem = f"{len(row['logprobs'])} logprobs but {len(row['num_tokens'])} num_tokens"
    return problem


def _ids(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def match_rows(path: Path, rows: list[dict], other_path: Path, others: list[dict], key: str) -> None:
    """Check that ``others`` (judgments, self-scores) are ``rows``' (completions), matched by id: the
    same ids, and ``key`` of each with one entry per completion; else a RecordError naming the ids."""
    by_id = {o["id"]: (m, o) for m, o in enumerate(others, start=1)}
    ids = {r["id"] for r in rows}
    missing = list(dict.fromkeys(r["id"] for r in rows if r["id"] not in by_id))
    extra = list(dict.fromkeys(o["id"] for o in others if o["id"] not in ids))
    if missing or extra:
        problems = ([f"no row for id(s) {_ids(missing)} of {path}"] if missing else []) + \
                   ([f"id(s) {_ids(extra)} are not in {path}"] if extra else [])
        raise RecordError(f"{other_path} does not match {path}: {'; '.join(problems)}")
    for n, row in enumerate(rows, start=1):
        m, other = by_id[row["id"]]
        if len(other[key]) != len(row["completions"]):
            raise RecordError(f"{other_path}:{m}: {len(other[key])} {key} for id {row['id']!r}, which has "
                              f"{len(row['completions'])} completions ({path}:{n})")


@contextlib.contextmanager
def atomic_open(path: str | Path):
    """A text file that appears at ``path`` only when the block succeeds (a temporary file beside it,
    then a rename): a crash never leaves half a file, nor replaces a finished one with nothing. The
    file gets the usual permissions (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows to ``path`` atomically (``atomic_open``)."""
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | Path, obj: dict) -> Path:
    """Write one JSON document atomically (metrics, manifests)."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)
    return Path(path)


@contextlib.contextmanager
def staged(out_dir: str | Path):
    """A temporary directory beside ``out_dir`` for a stage that writes several files: when the
    block succeeds its files replace those of the same names in ``out_dir`` (each by a rename,
    ``metrics.json`` last), when it fails it is removed, so a failed stage leaves the files of a
    finished one as they were."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        out_dir.mkdir(exist_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "metrics.json"):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
