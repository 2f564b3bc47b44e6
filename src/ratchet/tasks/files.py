"""A task read from a user's data: a JSONL / JSON / CSV / Parquet file, a folder written by
``datasets``' ``save_to_disk``, or ``hf:<dataset>`` (through the Hugging Face cache; offline when
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` say so). Every format is read by ``datasets``.

Columns map to ratchet's names through ``fields`` (``tasks.base.FIELDS``); a row with
``messages`` is used as is, a plain ``prompt`` becomes one user message after an optional
``system`` one. Every other column rides along in the row, so a judge can read it.

The split is fixed by the content, not by the order of the file: a row is held out when a seeded
hash of its messages falls below ``heldout_fraction`` (or every row of ``heldout_source`` is held
out, and training rows with a held-out prompt are dropped). Identical prompts are one row, so
the two splits never share a prompt (checked). Round r takes the next ``n`` rows of a seeded
shuffle of the training split, and a new shuffle starts only when the split is used up, so no
row repeats before every row has been seen.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path

from ratchet.data.records import file_hash, messages_problem
from ratchet.tasks.base import FIELDS, TaskError

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""File suffix -> the ``datasets`` builder that reads it."""
HF_PREFIX = "hf:"


def source_problem(source: str) -> str | None:
    """Why ``source`` cannot be a task source, or None; cheap (no data is read), for config checks."""
    if source.startswith(HF_PREFIX):
        return None if source[len(HF_PREFIX):].strip() else "expected hf:<dataset name>"
    path = Path(source).expanduser()
    if path.is_dir():
        return None
    if not path.exists():
        return f"{source} does not exist"
    if path.suffix.lower() not in SUFFIXES:
        return f"{source}: expected a {'/'.join(SUFFIXES)} file, a save_to_disk folder or hf:<dataset>"
    return None


def _read(source: str, *, subset: str | None, split: str, revision: str | None) -> list[dict]:
    """Every row of ``source`` as plain Python values."""
    problem = source_problem(source)
    if problem:
        raise TaskError(f"task.source: {problem}")
    import datasets  # heavy; imported only when a file task is read

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its own "Failed to load JSON" would precede ours
    try:
        if source.startswith(HF_PREFIX):
            data = datasets.load_dataset(source[len(HF_PREFIX):], subset, split=split, revision=revision)
        elif Path(source).expanduser().is_dir():
            data = datasets.load_from_disk(str(Path(source).expanduser()))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise TaskError(f"{source}: no split {split!r} (task.split); it has {sorted(data)}")
                data = data[split]
        else:
            path = Path(source).expanduser()
            data = datasets.load_dataset(SUFFIXES[path.suffix.lower()], data_files=str(path), split="train")
    except TaskError:
        raise
    except Exception as e:  # datasets raises many kinds (offline, bad JSON, bad parquet): name the source
        while e.__cause__ is not None or e.__context__ is not None:  # the root cause says what is wrong
            e = e.__cause__ or e.__context__
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        line = _bad_jsonl_line(source)  # datasets names a byte offset at best; a user wants the line
        raise TaskError(line or f"{source}: cannot be read as a dataset ({type(e).__name__}: {first})") from None
    # through JSON once: the rows are written to prompts.jsonl, so what cannot be written fails here
    return [json.loads(json.dumps(row, default=str)) for row in data]


def _bad_jsonl_line(source: str) -> str | None:
    """For a .jsonl file: the first line that is not one JSON object, said as a user would fix it."""
    path = Path(source).expanduser()
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return None
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                return f"{source}:{number}: not valid JSON ({e.msg}, column {e.colno}): {text.strip()[:80]!r}"
            if not isinstance(row, dict):
                return f"{source}:{number}: expected a JSON object ({{\"prompt\": ...}}), got {type(row).__name__}"
    return None


def _messages(row: dict, fields: dict, where: str, template: str | None = None) -> list[dict]:
    col = fields.get("messages", "messages")
    if template is None and col in row and row[col] is not None:
        problem = messages_problem(row[col], col)
        if problem:
            raise TaskError(f"{where}: column {problem.removeprefix('key ')} (task.fields.messages)")
        return row[col]
    col = fields.get("prompt", "prompt")
    try:
        prompt = template.format_map(row) if template is not None else row.get(col)
    except (KeyError, ValueError, IndexError) as e:
        raise TaskError(f"{where}: task.template cannot be filled from this row ({type(e).__name__}: {e})") from None
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskError(f"{where}: column {col!r} (prompt) must be a non-empty string, got {prompt!r}")
    system = row.get(fields.get("system", "system"))
    if system is not None and not isinstance(system, str):
        raise TaskError(f"{where}: column {fields.get('system', 'system')!r} (system) must be a string")
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def to_row(raw: dict, fields: dict, task: str, where: str, template: str | None = None) -> dict:
    """One dataset row -> a prompt row: ratchet's names from their columns (the prompt from
    ``template`` over the columns, if given), other columns kept."""
    mapped = {fields.get(name, name) for name in FIELDS}
    row = {k: v for k, v in raw.items() if k not in mapped}
    messages = _messages(raw, fields, where, template)
    row.update(task=task, messages=messages)
    for name in ("answer", "tests"):
        value = raw.get(fields.get(name, name))
        if value is not None:  # an answer stays a string, or a list of accepted strings
            keep = name == "tests" or isinstance(value, str) or isinstance(value, list)
            row[name] = value if keep else str(value)
    digest = content_hash(messages)
    given = raw.get(fields.get("id", "id"))
    row["id"] = str(given) if given is not None else f"row-{digest[:12]}"
    return row


def content_hash(messages: list[dict], salt: str = "") -> str:
    return hashlib.sha256((salt + json.dumps(messages, sort_keys=True, ensure_ascii=False)).encode()).hexdigest()


def _check_columns(raw: list[dict], fields: dict, source: str, template: str | None) -> None:
    """A mapped column missing from the data is an error naming it (checked on the first row,
    since every row of a dataset has the same columns)."""
    if not raw:
        raise TaskError(f"{source}: the dataset is empty")
    columns = sorted(raw[0])
    for name, col in fields.items():
        if col not in raw[0]:
            raise TaskError(f"{source}: no column {col!r} (task.fields.{name}); its columns are {columns}")
    if template is not None:
        for col in template_columns(template):
            if col not in raw[0]:
                raise TaskError(f"{source}: no column {col!r} (in task.template); its columns are {columns}")
        return
    prompt_cols = (fields.get("messages", "messages"), fields.get("prompt", "prompt"))
    if not any(c in raw[0] for c in prompt_cols):
        raise TaskError(f"{source}: no prompt column: expected {prompt_cols[1]!r} or {prompt_cols[0]!r} "
                        f"(map yours with task.fields.prompt); its columns are {columns}")


def template_columns(template: str) -> list[str]:
    """The columns a ``str.format`` template reads; ValueError if it is not one."""
    import string

    names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    if any(not n or not n.isidentifier() for n in names):
        raise ValueError(f"expected {{column}} placeholders (e.g. 'Capital of {{country}}?'), got {template!r}")
    return names


class FileTask:
    """A task over a user's dataset; see the module docstring for the split and the draw."""

    default_judge = "exact"

    def __init__(self, source: str, *, name: str | None = None, fields: dict | None = None,
                 heldout_fraction: float = 0.2, heldout_source: str | None = None, stop: tuple[str, ...] = (),
                 seed: int = 0, template: str | None = None, subset: str | None = None, split: str = "train",
                 heldout_split: str | None = None, revision: str | None = None):
        self.source, self.fields, self.seed = source, dict(fields or {}), seed
        self.name = name or (source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else Path(source).stem)
        self.heldout_fraction, self.heldout_source, self.stop = heldout_fraction, heldout_source, tuple(stop)
        self.read_options = {"subset": subset, "split": split, "revision": revision}
        self.heldout_split, self.template = heldout_split or split, template

    def _rows(self, source: str, split: str) -> list[dict]:
        raw = _read(source, **{**self.read_options, "split": split})
        _check_columns(raw, self.fields, source, self.template)
        rows, seen_ids = [], set()
        for n, r in enumerate(raw, start=1):
            row = to_row(r, self.fields, self.name, f"{source}: row {n}", self.template)
            if row["id"] in seen_ids:
                raise TaskError(f"{source}: row {n}: id {row['id']!r} is used by an earlier row")
            seen_ids.add(row["id"])
            rows.append(row)
        return rows

    @functools.cached_property
    def _splits(self) -> tuple[list[dict], list[dict]]:
        """(train, held-out), each in the order of its rows' seeded content hash, prompts unique."""
        salt = f"ratchet-split/{self.seed}/"
        keyed = lambda rows: {content_hash(r["messages"]): r for r in reversed(rows)}  # noqa: E731 (first wins)
        rows = keyed(self._rows(self.source, self.read_options["split"]))
        if self.heldout_source:
            held = keyed(self._rows(self.heldout_source, self.heldout_split))
            train = {h: r for h, r in rows.items() if h not in held}
        else:
            # the hash of the salted content, read as a number in [0, 1), decides the split
            fraction = {h: int(content_hash(r["messages"], salt)[:13], 16) / 16 ** 13 for h, r in rows.items()}
            held = {h: r for h, r in rows.items() if fraction[h] < self.heldout_fraction}
            train = {h: r for h, r in rows.items() if fraction[h] >= self.heldout_fraction}
        assert not set(train) & set(held), "a prompt is in both splits"
        order = lambda d: [d[h] for h in sorted(d, key=lambda h: content_hash(d[h]["messages"], salt))]  # noqa: E731
        train_rows, held_rows = order(train), order(held)
        for split, part in (("training", train_rows), ("held-out", held_rows)):
            if not part:
                raise TaskError(f"{self.source}: the {split} split is empty ({len(rows)} distinct prompts, "
                                f"task.heldout_fraction={self.heldout_fraction}); more rows or another fraction")
        return train_rows, held_rows

    def check(self) -> dict:
        train, held = self._splits
        return {"task": self.name, "source": self.source, "train_rows": len(train), "heldout_rows": len(held)}

    def heldout(self, n: int) -> list[dict]:
        return self._splits[1][:n]

    def train(self, n: int, round: int) -> list[dict]:
        """Rows ``(round-1)*n ..`` of the stream made of shuffles 0, 1, 2... of the split (a row
        that the seam between two shuffles would repeat within the round is passed over)."""
        pool = self._splits[0]
        out, seen, position = [], set(), (round - 1) * n
        while len(out) < min(n, len(pool)):
            epoch, offset = divmod(position, len(pool))
            order = list(range(len(pool)))
            random.Random(f"ratchet-draw/{self.seed}/{epoch}").shuffle(order)
            if order[offset] not in seen:
                seen.add(order[offset])
                out.append(pool[order[offset]])
            position += 1
        return out

    def fingerprint(self) -> dict:
        return {"source": _identity(self.source),
                "heldout_source": self.heldout_source and _identity(self.heldout_source),
                "fields": self.fields, "template": self.template, "seed": self.seed, "read": self.read_options,
                "heldout_split": self.heldout_split}


def _identity(source: str) -> str:
    """A file's or folder's content hash; a hub dataset's name (its revision is in ``read``)."""
    return source if source.startswith(HF_PREFIX) else file_hash(Path(source).expanduser())
