"""Bad input on the command line: one line naming the file and row (or the config key), exit code
2, never a traceback; a failed stage leaves what a finished one wrote, its config included, as it
was. One case per kind of bad input found by trying the stage commands (non-UTF-8 files, wrong
types in rows, judgments that do not match completions, out-of-range config values, empty files,
pairs whose chosen equals rejected, non-finite or non-numeric scores)."""

import json
import re

import pytest

from ratchet import cli
from ratchet.config import ConfigError, load_config
from ratchet.data.records import RecordError, read_jsonl, write_json, write_jsonl
from ratchet.judge import JUDGES

from conftest import LengthJudge, tiny_run_overrides as _overrides

STAGE_FILES = ("prompts", "completions", "judgments", "pairs")


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir):
    """Valid prompts, completions, judgments and pairs, made once by the CLI on the tiny model."""
    d = tmp_path_factory.mktemp("made")
    o = _overrides(d, tiny_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(JUDGES, "length", LengthJudge)
        assert cli.main(["prompts", "--out", str(d / "prompts.jsonl"), *o]) == 0
        assert cli.main(["generate", "--model", str(tiny_model_dir), "--prompts", str(d / "prompts.jsonl"),
                         "--out", str(d / "completions.jsonl"), *o]) == 0
        assert cli.main(["judge", "--completions", str(d / "completions.jsonl"), "--out",
                         str(d / "judgments.jsonl"), *o]) == 0
        assert cli.main(["pair", "--completions", str(d / "completions.jsonl"), "--judgments",
                         str(d / "judgments.jsonl"), "--out", str(d / "pairs.jsonl"), *o]) == 0
    assert read_jsonl(d / "pairs.jsonl")  # something to train on
    return {name: d / f"{name}.jsonl" for name in STAGE_FILES}


@pytest.fixture
def o(tmp_path, tiny_model_dir, length_judge):
    """The tiny round's overrides (judge.name=length: the length judge is registered)."""
    return _overrides(tmp_path, tiny_model_dir)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _command(kind, made, tiny_model_dir, bad, out):
    """The stage command that reads a file of ``kind``, given ``bad`` in its place."""
    files = {**made, kind: bad}
    return {
        "prompts": ["generate", "--model", tiny_model_dir, "--prompts", files["prompts"], "--out", out],
        "completions": ["judge", "--completions", files["completions"], "--out", out],
        "judgments": ["pair", "--completions", files["completions"], "--judgments", files["judgments"], "--out", out],
        "pairs": ["train", "--model", tiny_model_dir, "--pairs", files["pairs"], "--out", out],
    }[kind]


def _fails(capsys, argv, match):
    """Run the CLI; it must exit 2 with one line on stderr matching ``match`` (a regex)."""
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("ratchet: ") and re.search(match, err), err
    return err


def _snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ files and rows
@pytest.mark.parametrize("kind", STAGE_FILES)
@pytest.mark.slow
def test_non_utf8_file_names_the_row(tmp_path, made, tiny_model_dir, o, capsys, kind):
    lines = made[kind].read_bytes().splitlines(keepends=True)
    bad = tmp_path / f"bad-{kind}.jsonl"
    bad.write_bytes(lines[0] + lines[1][:20] + b"\xff\xfe" + lines[1][20:] + b"".join(lines[2:]))
    err = _fails(capsys, [*_command(kind, made, tiny_model_dir, bad, tmp_path / "out.jsonl"), *o],
                 rf"{re.escape(str(bad))}:2: not UTF-8 text \(byte 0xff at column 21\)")
    assert ("--skip-invalid" in err) is False  # a file error: skipping rows would not help


def _set(key, value, item=None):
    def mutate(row):
        if item is None:
            row[key] = value
        else:
            row[key][0][item] = value
    return mutate


@pytest.mark.parametrize("kind, mutate, match", [
    ("prompts", _set("messages", "hi"), r":1: key 'messages': expected a non-empty list of \{'role': str"),
    ("prompts", _set("messages", 5, "content"), r":1: key 'messages' item 0: expected \{'role': str, 'content': str\}"),
    ("prompts", _set("id", [1]), r":1: key 'id': expected a string or an integer, got \[1\] \(list\)"),
    ("prompts", _set("task", 3), r":1: key 'task': expected a task name"),
    ("completions", _set("completions", "abc"), r":1: key 'completions': expected a non-empty list"),
    ("completions", _set("completions", []), r":1: key 'completions': expected a non-empty list"),
    ("completions", _set("completions", 5, "text"), r":1: key 'completions' item 0: expected \{'text': str"),
    ("completions", _set("completions", 1, "finish_reason"), r":1: key 'completions' item 0: 'finish_reason'"),
    ("judgments", _set("correct", "yes"), r":1: key 'correct': expected a list of 3 true/false/null"),
    ("judgments", _set("correct", [1, 0, 1]), r":1: key 'correct': expected a list of 3 true/false/null"),
    ("judgments", _set("details", {}), r":1: key 'details': expected a list of 3"),
    ("judgments", _set("scores", 1.0), r":1: key 'scores': expected a list of finite numbers"),
    ("pairs", _set("messages", [1]), r"pairs row 1: key 'messages' item 0: expected \{'role': str"),
    ("pairs", _set("messages", [{"role": 1, "content": "x"}]), r"pairs row 1: key 'messages' item 0"),
    ("pairs", _set("chosen", 7), r"pairs row 1: chosen must be a string \(the answer text\), got int 7"),
    ("pairs", _set("rejected", None), r"pairs row 1: rejected must be a string"),
])
@pytest.mark.slow
def test_wrong_types_in_rows_name_the_row(tmp_path, made, tiny_model_dir, o, capsys, kind, mutate,
                                          match):
    rows = _rows(made[kind])
    mutate(rows[0])
    bad = _write(tmp_path / f"bad-{kind}.jsonl", rows)
    err = _fails(capsys, [*_command(kind, made, tiny_model_dir, bad, tmp_path / "out"), *o],
                 re.escape(str(bad)) + ".*" + match)
    assert ("use --skip-invalid to skip such rows" in err) == (kind == "pairs")  # only `ratchet train` has it


@pytest.mark.slow
def test_prompt_too_long_for_the_model_names_the_file_and_row(tmp_path, made, tiny_model_dir, o, capsys):
    rows = _rows(made["prompts"])
    rows[1]["messages"][0]["content"] = "y" * 3000  # the tiny model's context is 512 tokens
    bad = _write(tmp_path / "prompts.jsonl", rows)
    for command, out in (("generate", tmp_path / "c.jsonl"), ("evaluate", tmp_path / "eval")):
        _fails(capsys, [command, "--model", tiny_model_dir, "--prompts", bad, "--out", out, *o],
               rf"{re.escape(str(bad))}: id '{rows[1]['id']}': prompt 1 .* is \d+ tokens; .* exceeds the model's "
               "context of 512 tokens")
    assert not list(tmp_path.glob("c*")) and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_judgments_must_match_completions_by_id(tmp_path, made, o, capsys):
    judged = _rows(made["judgments"])
    first = judged[0]["id"]
    judged[0]["id"] = "not-a-prompt"
    bad = _write(tmp_path / "judgments.jsonl", judged)
    argv = ["pair", "--completions", made["completions"], "--judgments", bad, "--out", tmp_path / "pairs.jsonl", *o]
    _fails(capsys, argv, rf"{re.escape(str(bad))} does not match {re.escape(str(made['completions']))}: "
                         rf"no row for id\(s\) '{first}' of .*; id\(s\) 'not-a-prompt' are not in ")
    judged = _rows(made["judgments"])  # a whole row missing
    bad = _write(tmp_path / "judgments.jsonl", judged[1:])
    _fails(capsys, argv, rf"no row for id\(s\) '{first}' of ")
    judged = _rows(made["judgments"])  # one score too few
    judged[1] = {**judged[1], "scores": judged[1]["scores"][:2], "correct": None, "details": None}
    bad = _write(tmp_path / "judgments.jsonl", judged)
    _fails(capsys, argv, rf"{re.escape(str(bad))}:2: 2 scores for id '{judged[1]['id']}', which has 3 completions "
                         rf"\({re.escape(str(made['completions']))}:2\)")
    assert not (tmp_path / "pairs.jsonl").exists()


@pytest.mark.parametrize("score, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf"),
                                          ('"0.5"', "'0.5' \\(str\\)"), ("null", "None"), ("true", "True")])
@pytest.mark.slow
def test_non_finite_and_non_numeric_scores_are_refused(tmp_path, made, o, capsys, score, shown):
    lines = made["judgments"].read_text().splitlines()
    row = json.loads(lines[2])
    scores = ", ".join([score] + [json.dumps(s) for s in row["scores"][1:]])  # the first one replaced
    lines[2] = json.dumps({**row, "scores": "SCORES"}).replace('"SCORES"', f"[{scores}]")
    bad = tmp_path / "judgments.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    _fails(capsys, ["pair", "--completions", made["completions"], "--judgments", bad, "--out", tmp_path / "p.jsonl",
                    *o], rf"{re.escape(str(bad))}:3: key 'scores' item 0: expected a finite number, got {shown}")
    assert not (tmp_path / "p.jsonl").exists()


def test_unreadable_json_values_name_the_row(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"id": "a"}\n{"id": "\\ud800"}\n')  # a lone surrogate: valid JSON, no text
    with pytest.raises(RecordError, match=rf"{re.escape(str(bad))}:2: holds an unpaired UTF-16 surrogate"):
        read_jsonl(bad)
    bad.write_text('{"id": "\\ud83d\\ude00"}\n')  # a surrogate pair is a character
    assert read_jsonl(bad) == [{"id": "\U0001F600"}]
    bad.write_text('{"n": ' + "9" * 5000 + "}\n")  # past Python's integer digit limit
    with pytest.raises(RecordError, match=rf"{re.escape(str(bad))}:1: not readable JSON"):
        read_jsonl(bad)
    bad.write_text("[" * 100_000 + "\n")
    with pytest.raises(RecordError, match=rf"{re.escape(str(bad))}:1: not "):
        read_jsonl(bad)


# ------------------------------------------------------------------------------ config values
@pytest.mark.parametrize("override, message", [
    ("task.train_prompts=-1", "task.train_prompts: expected >= 1, got -1"),
    ("train.lr=nan", "train.lr: expected a finite float"),
    ("train.lr=0", "train.lr: expected a finite number > 0, got 0.0"),
    ("train.lr=-1e-5", "train.lr: expected a finite number > 0"),
    ("train.batch_size=0", "train.batch_size: expected >= 1, got 0"),
    ("train.batch_size=-4", "train.batch_size: expected >= 1, got -4"),
    ("train.epochs=0", "train.epochs: expected >= 1"),
    ("train.grad_accum=0", "train.grad_accum: expected >= 1"),
    ("train.max_length=0", "train.max_length: expected >= 1"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio: expected a fraction in [0, 1], got 1.5"),
    ("train.warmup_ratio=-0.1", "train.warmup_ratio: expected a fraction in [0, 1]"),
    ("train.weight_decay=-1", "train.weight_decay: expected a finite number >= 0"),
    ("train.max_grad_norm=-1", "train.max_grad_norm: expected a finite number >= 0"),
    ("train.checkpoint_every=-1", "train.checkpoint_every: expected >= 0"),
    ("rounds=0", "rounds: expected >= 1, got 0"),
    ("gate_tolerance=-0.1", "gate_tolerance: expected a finite number >= 0"),
    ("generate.temperature=0", "generate.temperature: 0 (greedy) gives 8 identical completions per prompt"),
])
def test_numeric_config_values_are_range_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_edge_values_still_load():
    cfg = load_config(None, ["train.warmup_ratio=0", "train.warmup_ratio=1", "train.max_grad_norm=0",
                             "train.checkpoint_every=0", "train.weight_decay=0", "gate_tolerance=0"])
    assert cfg.train.max_grad_norm == 0 and cfg.train.checkpoint_every == 0


@pytest.mark.parametrize("command, override, message", [
    ("prompts", "task.train_prompts=-1", "task.train_prompts: expected >= 1"),
    ("train", "train.lr=nan", "train.lr: expected a finite float"),
    ("train", "train.batch_size=0", "train.batch_size: expected >= 1, got 0"),
    ("train", "train.batch_size=-1", "train.batch_size: expected >= 1, got -1"),
])
@pytest.mark.slow
def test_bad_config_on_the_command_line(tmp_path, made, tiny_model_dir, o, capsys, command, override, message):
    argv = {"prompts": ["prompts", "--out", tmp_path / "p.jsonl"],
            "train": ["train", "--model", tiny_model_dir, "--pairs", made["pairs"], "--out", tmp_path / "t"]}[command]
    _fails(capsys, [*argv, *o, override], "^ratchet: config error: " + re.escape(message))
    assert not list(tmp_path.glob("*.yaml")) and not (tmp_path / "t").exists()


# ------------------------------------------------------------------------------ empty and identical
def test_empty_pairs_file(tmp_path, tiny_model_dir, o, capsys):
    empty = tmp_path / "pairs.jsonl"
    empty.write_text("")
    _fails(capsys, ["train", "--model", tiny_model_dir, "--pairs", empty, "--out", tmp_path / "t", *o],
           rf"{re.escape(str(empty))}: no valid pairs to train on \(the file has no rows\)")
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_empty_completions_file_keeps_the_judgments(tmp_path, made, o, capsys):
    out = tmp_path / "judgments.jsonl"
    assert cli.main(["judge", "--completions", str(made["completions"]), "--out", str(out), *o]) == 0
    before = _snapshot(tmp_path)
    empty = tmp_path / "in" / "completions.jsonl"
    empty.parent.mkdir()
    empty.write_text("\n")
    capsys.readouterr()
    _fails(capsys, ["judge", "--completions", empty, "--out", out, *o, "judge.metric=mean_score"],
           rf"{re.escape(str(empty))}: no rows \(the file is empty\)")
    assert _snapshot(tmp_path) == {**before, "in/completions.jsonl": b"\n"}


@pytest.mark.slow
def test_train_drops_identical_pairs_and_counts_them(tmp_path, made, tiny_model_dir, o, capsys):
    rows = _rows(made["pairs"])
    same = [{**r, "rejected": r["chosen"]} for r in rows]
    pairs = _write(tmp_path / "pairs.jsonl", rows + same)
    assert cli.main(["train", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--out", str(tmp_path / "t"),
                     *o]) == 0
    assert f"train: dropped {len(same)} pairs whose chosen equals rejected" in capsys.readouterr().out
    summary = json.loads((tmp_path / "t" / "train_summary.json").read_text())
    assert summary["dropped_identical"] == len(same) and summary["pairs"] == len(rows)
    # nothing but identical pairs: nothing to learn, said so
    _write(pairs, same)
    _fails(capsys, ["train", "--model", tiny_model_dir, "--pairs", pairs, "--out", tmp_path / "t2", *o],
           rf"no valid pairs to train on \(0 invalid rows skipped, {len(same)} with chosen == rejected dropped\)")


def test_pair_stage_drops_identical_pairs_and_counts_them(tmp_path, o):
    chat = [{"role": "user", "content": "say something"}]
    comps = [{"id": "a", "messages": chat, "completions": [{"text": t, "finish_reason": "stop"}
                                                           for t in ("same", "same", "other")]},
             {"id": "b", "messages": chat, "completions": [{"text": t, "finish_reason": "stop"}
                                                           for t in ("short", "longer", "longest")]}]
    judged = [{"id": "a", "scores": [1.0, 0.0, 0.5], "correct": [None] * 3},  # best and worst: the same text
              {"id": "b", "scores": [0.0, 0.5, 1.0], "correct": [None] * 3}]
    c, j = write_jsonl(tmp_path / "c.jsonl", comps), write_jsonl(tmp_path / "j.jsonl", judged)
    assert cli.main(["pair", "--completions", str(c), "--judgments", str(j), "--out", str(tmp_path / "pairs.jsonl"),
                     *o]) == 0
    assert [(p["chosen"], p["rejected"]) for p in _rows(tmp_path / "pairs.jsonl")] == [("longest", "short")]
    counts = json.loads((tmp_path / "pairs.metrics.json").read_text())
    assert counts == {"rows": 1, "pairs_dropped_identical": 1}


@pytest.mark.slow
def test_round_metrics_record_the_dropped_pairs(tmp_path, tiny_model_dir, length_judge):
    assert cli.main(["demo", *_overrides(tmp_path, tiny_model_dir), "task.heldout_prompts=1"]) == 0
    metrics = json.loads((tmp_path / "runs" / "tiny" / "round_1" / "metrics.json").read_text())
    assert metrics["pairs_dropped_identical"] == 0


# ------------------------------------------------------------------------------ a failure loses nothing
@pytest.mark.parametrize("kind", STAGE_FILES)
@pytest.mark.slow
def test_failing_stage_leaves_the_finished_run_byte_identical(tmp_path, made, tiny_model_dir, o,
                                                              capsys, kind):
    out = tmp_path / "out" / ("run" if kind == "pairs" else "stage.jsonl")
    argv = _command(kind, made, tiny_model_dir, made[kind], out)
    assert cli.main([str(a) for a in argv] + o) == 0
    config = out / "run.config.yaml" if kind == "pairs" else out.with_name("stage.config.yaml")
    assert config.exists()
    before = _snapshot(tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(made[kind].read_bytes()[:-5])  # the last row cut short
    capsys.readouterr()
    # another config too: had the failing run saved its config, the file would differ
    _fails(capsys, [*_command(kind, made, tiny_model_dir, bad, out), *o, "task.seed=7"],
           rf"{re.escape(str(bad))}:\d+: not valid JSON")
    assert _snapshot(tmp_path / "out") == before


@pytest.mark.slow
def test_failing_evaluate_leaves_the_finished_evaluation(tmp_path, made, tiny_model_dir, o, capsys):
    out = tmp_path / "out" / "eval"
    argv = ["evaluate", "--model", tiny_model_dir, "--prompts", made["prompts"], "--out", out]
    assert cli.main([str(a) for a in argv] + o) == 0
    assert {p.name for p in out.iterdir()} == {"answers.jsonl", "judgments.jsonl", "metrics.json", "eval.config.yaml"}
    before = _snapshot(tmp_path / "out")
    bad = _write(tmp_path / "prompts.jsonl", [{"id": "x", "messages": []}])
    capsys.readouterr()
    _fails(capsys, [*argv[:4], bad, *argv[5:], *o, "evaluate.max_new_tokens=5"], r":1: key 'messages'")
    assert _snapshot(tmp_path / "out") == before


@pytest.mark.slow
def test_row_the_judge_cannot_read_names_the_file(tmp_path, made, tiny_model_dir, o, capsys):
    """The answer judge needs each prompt's answer: judging names the completions file, evaluating the
    prompts file; the answers sampled before the judge failed do not replace a finished evaluation's."""
    comps = _rows(made["completions"])
    del comps[1]["answer"]
    bad = _write(tmp_path / "completions.jsonl", comps)
    _fails(capsys, ["judge", "--completions", bad, "--out", tmp_path / "j.jsonl", *o, "judge.name=answer"],
           rf"^ratchet: {re.escape(str(bad))}: prompt '{comps[1]['id']}' has no 'answer' field")
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", tiny_model_dir, "--prompts", made["prompts"], "--out", out, *o,
            "evaluate.judge=answer"]
    assert cli.main([str(a) for a in argv]) == 0
    before = _snapshot(out)
    prompts = _rows(made["prompts"])
    del prompts[2]["answer"]
    bad = _write(tmp_path / "prompts.jsonl", prompts)
    capsys.readouterr()
    assert cli.main([str(a) for a in argv[:4] + [bad] + argv[5:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the sampling bar
    assert err == f"ratchet: {bad}: prompt '{prompts[2]['id']}' has no 'answer' field; the answer judge needs one"
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_write_json_and_save_config_leave_the_old_file_when_they_fail(tmp_path, monkeypatch):
    from ratchet import config as config_module

    path = write_json(tmp_path / "metrics.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    cfg = load_config(None, [])
    saved = tmp_path / "run.config.yaml"
    config_module.save_config(cfg, saved)
    text = saved.read_text()
    monkeypatch.setattr(config_module.yaml, "safe_dump", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        config_module.save_config(cfg, saved)
    assert saved.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json",
                                                                                        "run.config.yaml"]


@pytest.mark.slow
def test_skip_invalid_is_suggested_only_by_train(tmp_path, made, tiny):
    """The loop and compare-revisions train without --skip-invalid: their errors do not offer it."""
    from ratchet.config import TrainConfig
    from ratchet.loop import stages
    from ratchet.train.batches import PairsError

    rows = _rows(made["pairs"])
    rows[0]["chosen"] = ""
    bad = _write(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(PairsError, match=r"pairs row 1: empty chosen completion$"):
        stages.train_model(*tiny, bad, tmp_path / "t", TrainConfig(batch_size=2, max_length=400), progress=False)
