"""Every stage command fed random mutations of valid files: truncation, byte flips, values of the
wrong type, huge values, missing keys, empty files, invalid UTF-8. Each run must exit 0 or 2, never
with a traceback; an exit 2 prints one line; a failed run leaves the files of the finished run in
the same output path (outputs and config) byte-identical. Seeded, so a failure reproduces.

Run with ``-s`` to see the counts."""

import json
import os
import random

import pytest

from ratchet import cli
from ratchet.judge import JUDGES

from conftest import LengthJudge, tiny_run_overrides as _overrides

pytestmark = pytest.mark.slow  # every stage command, many times, on the tiny model

SEED = int(os.environ.get("RATCHET_FUZZ_SEED", "0"))
SCALE = float(os.environ.get("RATCHET_FUZZ_SCALE", "1"))
"""Another seed, or more mutations, for a longer search than CI's: ``RATCHET_FUZZ_SEED=3 RATCHET_FUZZ_SCALE=10``."""
MUTATIONS = {kind: max(1, round(n * SCALE)) for kind, n in
             {"prompts": 30, "completions": 40, "judgments": 50, "pairs": 30}.items()}
"""Mutated files per kind (prompts feed two commands, completions two); 150 in all."""
WRONG = [None, True, False, 0, -1, 2.5, "", "x", [], [1, "a"], {}, {"a": 1}]
HUGE = ["1" + "0" * 30, "-1" + "0" * 30, "1e308", "-1e308", str(2 ** 63), "9" * 5000, "NaN", "Infinity", "-Infinity",
        "1e999"]
"""Raw JSON number texts (5000 digits: past Python's int limit), placed in a number's stead."""


def _leaves(value, path=()):
    """Every (path, value) inside a JSON value, containers included, the root left out."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield path + (key,), child
        yield from _leaves(child, path + (key,))


def _replace(row, path, new):
    node = row
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new


def _rows_of(data: bytes):
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _dump(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a valid JSONL file: (its name, the bytes)."""
    kind = rng.choice(["truncate", "flip", "wrong_type", "wrong_type", "huge", "drop_key", "empty", "bad_utf8"])
    if kind == "truncate":
        return kind, data[:rng.randrange(len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(out))
            out[i] ^= rng.randint(1, 255)
        return kind, bytes(out)
    if kind == "empty":
        return kind, rng.choice([b"", b"\n", b"   \n\n"])
    if kind == "bad_utf8":
        i = rng.randrange(len(data))
        return kind, data[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"]) + data[i:]
    rows = _rows_of(data)
    row = rng.choice(rows)
    paths = list(_leaves(row))
    if kind == "drop_key":
        path = rng.choice([p for p, _ in paths if isinstance(p[-1], str)])
        node = row
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return kind, _dump(rows)
    if kind == "huge":
        strings = [p for p, v in paths if isinstance(v, str)]
        if strings and rng.random() < 0.3:  # a long string (a prompt of thousands of tokens)
            _replace(row, rng.choice(strings), "y" * 3000)
            return kind, _dump(rows)
        numbers = [p for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
        _replace(row, rng.choice(numbers or [p for p, _ in paths]), "HUGE-NUMBER")
        return kind, _dump(rows).replace(b'"HUGE-NUMBER"', rng.choice(HUGE).encode())
    path, value = rng.choice(paths)
    _replace(row, path, rng.choice([w for w in WRONG if type(w) is not type(value)]))
    return kind, _dump(rows)


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_fuzz_stage_commands(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(JUDGES, "length", LengthJudge)
    o = _overrides(tmp_path, tiny_model_dir) + ["train.batch_size=4", "generate.k=2"]
    model = str(tiny_model_dir)
    valid = tmp_path / "valid"
    files = {k: valid / f"{k}.jsonl" for k in MUTATIONS}
    for argv in (["prompts", "--out", files["prompts"]],
                 ["generate", "--model", model, "--prompts", files["prompts"], "--out", files["completions"]],
                 ["judge", "--completions", files["completions"], "--out", files["judgments"]],
                 ["pair", "--completions", files["completions"], "--judgments", files["judgments"],
                  "--out", files["pairs"]]):
        assert cli.main([str(a) for a in argv] + o) == 0
    capsys.readouterr()

    outs = tmp_path / "outs"

    def commands(kind, path):
        """The stage commands reading a file of ``kind``, with ``path`` in its place; each writes
        into its own folder under ``outs``."""
        f = {**files, kind: path}
        return {
            "prompts": [("generate", ["generate", "--model", model, "--prompts", f["prompts"],
                                      "--out", outs / "generate" / "completions.jsonl"]),
                        ("evaluate", ["evaluate", "--model", model, "--prompts", f["prompts"],
                                      "--out", outs / "evaluate" / "eval"])],
            "completions": [("judge", ["judge", "--completions", f["completions"],
                                       "--out", outs / "judge" / "judgments.jsonl"]),
                            ("pair", ["pair", "--completions", f["completions"], "--judgments", f["judgments"],
                                      "--out", outs / "pair" / "pairs.jsonl"])],
            "judgments": [("pair", ["pair", "--completions", f["completions"], "--judgments", f["judgments"],
                                    "--out", outs / "pair" / "pairs.jsonl"])],
            "pairs": [("train", ["train", "--model", model, "--pairs", f["pairs"], "--out", outs / "train" / "run"])],
        }[kind]

    # a finished run of every command first: what a failed one must leave as it was
    for kind in MUTATIONS:
        for name, argv in commands(kind, files[kind]):
            assert cli.main([str(a) for a in argv] + o) == 0, name
    capsys.readouterr()

    rng = random.Random(SEED)
    counts = {"inputs": 0, "runs": 0, "clean errors": 0, "successes": 0, "tracebacks": 0}
    problems = []
    for kind, n in MUTATIONS.items():
        for i in range(n):
            how, data = mutate(files[kind].read_bytes(), rng)
            bad = tmp_path / "fuzz" / f"{kind}-{i}-{how}.jsonl"
            bad.parent.mkdir(exist_ok=True)
            bad.write_bytes(data)
            counts["inputs"] += 1
            for name, argv in commands(kind, bad):
                before = _snapshot(outs / name)
                counts["runs"] += 1
                try:
                    rc = cli.main([str(a) for a in argv] + o + [f"task.seed={i + 1}"])  # another config each time
                except Exception as e:  # noqa: BLE001  (what the CLI let through is the finding)
                    counts["tracebacks"] += 1
                    problems.append(f"{bad.name} | {name}: traceback {type(e).__name__}: {e}")
                    capsys.readouterr()
                    continue
                err = capsys.readouterr().err.strip()
                if rc == 0:
                    counts["successes"] += 1
                    continue
                counts["clean errors"] += rc == 2
                lines = err.splitlines()
                if rc != 2 or "Traceback" in err or len(lines) != 1 or not lines[0].startswith("ratchet: "):
                    problems.append(f"{bad.name} | {name}: exit {rc}, stderr {err!r}")
                if ("--skip-invalid" in err) and name != "train":  # suggested only where it exists
                    problems.append(f"{bad.name} | {name}: suggests --skip-invalid: {err!r}")
                if _snapshot(outs / name) != before:
                    problems.append(f"{bad.name} | {name}: the finished run's files changed")
    with capsys.disabled():
        print(f"\nfuzz: {counts['inputs']} mutated inputs, {counts['runs']} runs: {counts['clean errors']} clean "
              f"errors (exit 2), {counts['successes']} successes (exit 0), {counts['tracebacks']} tracebacks")
    assert not problems, "\n".join(problems)
    assert counts["clean errors"] > counts["runs"] // 2 and counts["successes"] > 0  # both paths were exercised
