"""What a user sees: help for every command and option, --version, ``ratchet config``, the loop's
status lines, ``ratchet demo`` = the demo recipe, and the thread count on a busy machine."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from ratchet import __version__, cli, console
from ratchet.config import RunConfig, field_docs, load_config

from conftest import tiny_run_overrides as _overrides


def _subparsers():
    parser = cli.parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action


def test_every_command_and_option_has_help(capsys):
    parser, action = _subparsers()
    helps = {c.dest: c.help for c in action._choices_actions}
    assert set(helps) == set(cli.COMMANDS) and all(h and len(h) > 10 for h in helps.values()), helps
    for name, sub in action.choices.items():
        for a in sub._actions:
            if not isinstance(a, argparse._HelpAction):
                assert a.help and a.help.strip(), f"ratchet {name} {a.option_strings or a.dest}: no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"ratchet {__version__}"


def test_every_help_page_formats(capsys):
    # argparse %-formats help strings: a bare "95% interval" crashed `ratchet --help` with a traceback.
    parser, action = _subparsers()
    for argv in [["--help"]] + [[name, "--help"] for name in action.choices]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0, argv
    out = capsys.readouterr().out
    assert "95% interval" in out and "%%" not in out


def test_missing_positionals_name_only_what_is_required(capsys):
    # key=value overrides are optional: `ratchet sweep` alone must not say they are required.
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["sweep"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("the following arguments are required: recipes")


def test_every_config_key_is_documented_and_shown(capsys):
    def walk(cfg, prefix=""):
        docs = field_docs(type(cfg))
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if dataclasses.is_dataclass(value) and type(value).__name__ != "LossConfig":
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                assert docs.get(f.name), f"{prefix}{f.name} has no docstring"
                yield f"{prefix}{f.name}"

    keys = list(walk(RunConfig()))
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    for key in keys:
        assert f"\n{key}: " in "\n" + out, key
    assert "task.source: str | None = None" in out and "train.lora.r: int = 0" in out
    assert cli.main(["config", "arithmetic-dpo"]) == 0
    assert "task.train_prompts: int = 256  (now: 128)" in capsys.readouterr().out
    assert cli.main(["config", "--list"]) == 0
    assert "arithmetic-dpo" in capsys.readouterr().out.split()


@pytest.mark.slow
def test_demo_runs_the_demo_recipe(monkeypatch):
    import ratchet.loop.run as run_mod

    seen = []
    monkeypatch.setattr(run_mod, "run_loop", lambda cfg, **k: seen.append(cfg) or (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        cli.main(["demo"])
    assert seen[0] == load_config("recipes/arithmetic-dpo.yaml") and seen[0].task.train_prompts == 128


@pytest.mark.slow
def test_loop_status_lines_and_resumed_stages(tmp_path, tiny_model_dir, length_judge, capsys):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=status"]
    assert cli.main(["loop", *o]) == 0
    err = capsys.readouterr().err
    for stage in ("generate", "judge", "pair", "train", "evaluate"):
        assert f"round 1/1 | {stage} | elapsed" in err, err
    assert cli.main(["loop", *o]) == 0
    assert "round 1/1 | train | elapsed" in (err := capsys.readouterr().err) and "- done, skipped" in err
    assert "Loading weights" not in err  # the libraries' own bars are silenced


def test_stage_config_records_the_model_that_ran(tmp_path, tiny_model_dir, length_judge):
    o = _overrides(tmp_path, tiny_model_dir)
    assert cli.main(["prompts", "--out", str(tmp_path / "p.jsonl"), *o[1:]]) == 0
    assert cli.main(["generate", "--model", str(tiny_model_dir), "--prompts", str(tmp_path / "p.jsonl"),
                     "--out", str(tmp_path / "c.jsonl"), *[x for x in o if not x.startswith("model=")]]) == 0
    import yaml

    saved = yaml.safe_load((tmp_path / "c.config.yaml").read_text())
    assert saved["model"]["path"] == str(tiny_model_dir)


def test_threads_follow_the_idle_cores(tmp_path, monkeypatch):
    assert console.pick_threads(2.0, 2) == 2 and console.pick_threads(1.05, 2) == 1
    assert console.pick_threads(0.1, 2) == 1 and console.pick_threads(None, 4) == 4
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    monkeypatch.setattr(console.time, "sleep", lambda s: stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n"))
    monkeypatch.setattr(console.os, "cpu_count", lambda: 2)
    assert console.idle_cores(stat=str(stat)) == pytest.approx(100 / 200 * 2)  # half the time idle: one core
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(console, "idle_cores", lambda: 1.0)
    monkeypatch.setattr(console.os, "sched_getaffinity", lambda pid: {0, 1})
    assert "1 of 2 cores are busy" in console.configure_threads() and console.os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert console.configure_threads() is None and console.os.environ["OMP_NUM_THREADS"] == "3"


def test_output_into_a_closed_pipe_ends_without_a_traceback():
    """`ratchet config | head`: the reader leaves before the listing is written; exit 1, stderr empty."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before ratchet writes a byte
    p = subprocess.run([sys.executable, "-m", "ratchet.cli", "config", "arithmetic-dpo"], stdout=write,
                       stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(write)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
