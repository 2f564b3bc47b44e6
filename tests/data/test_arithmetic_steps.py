"""``arithmetic`` with ``steps``: 1 is the original problems byte for byte; 2 and 3 are word problems of
exactly that many operations whose gold answer a separate reading of the text recomputes; the split
stays disjoint; ``task.steps`` reaches the generator from a recipe and is checked at load."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from ratchet import cli
from ratchet.config import ConfigError, load_config
from ratchet.data.arithmetic import make_problems
from ratchet.judge.answer import AnswerJudge
from ratchet.loop import stages
from ratchet.tasks import TaskError, builtin_task, load_task

# sha256 of these draws made by the code before ``steps`` existed (commit 3840b4c)
BEFORE_STEPS = "5535dd80f191b00003bb58b757e37a050f62b1b1d56e88d47f84c1062058825c"


def _draws(**kw):
    return (make_problems(200, split="train", seed=0, **kw) + make_problems(100, split="heldout", seed=0, **kw)
            + make_problems(50, split="train", seed=7, **kw))


def test_steps_1_is_the_original_problems_byte_for_byte():
    rows = _draws() + make_problems(30, split="train", seed=1, kinds=("add", "two_step"))
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == BEFORE_STEPS
    assert _draws(steps=1) == _draws()
    assert builtin_task("arithmetic", seed=3).fingerprint() == {"builtin": "arithmetic", "seed": 3}


def _question(row):
    return row["messages"][0]["content"].split("\n")[0]


def solve(question: str) -> tuple[int, int]:
    """(answer, operations) read from the text sentence by sentence, independently of the generator."""
    value, ops = None, 0
    for s in re.split(r"(?<=[.?])\s+", question):
        if m := re.fullmatch(r"\w+ has (\d+) boxes with (\d+) (\w+) in each box\.", s):
            value, ops = int(m[1]) * int(m[2]), ops + 1
        elif m := re.fullmatch(r"\w+ has (\d+) \w+\.", s):
            value = int(m[1])
        elif m := re.fullmatch(r"\w+ finds (\d+) more \w+\.", s):
            value, ops = value + int(m[1]), ops + 1
        elif m := re.fullmatch(r"\w+ gives (\d+) \w+ to a friend\.", s):
            value, ops = value - int(m[1]), ops + 1
        elif m := re.fullmatch(r"\w+ buys (\d+) packs with (\d+) \w+ in each pack\.", s):
            value, ops = value + int(m[1]) * int(m[2]), ops + 2
        elif m := re.fullmatch(r"\w+ shares all the \w+ equally among (\d+) friends\.", s):
            assert value % int(m[1]) == 0, question  # sharing is always exact
            value, ops = value // int(m[1]), ops + 1
        else:
            assert re.fullmatch(r"How many \w+ does (each friend get|\w+ have now)\?", s), s
        assert value is not None and value >= 1, question  # every intermediate count is positive
    return value, ops


@pytest.mark.parametrize("steps", [2, 3])
def test_multi_step_answers_and_operation_counts(steps):
    rows = make_problems(300, split="train", seed=5, steps=steps) + make_problems(100, split="heldout", seed=5,
                                                                                 steps=steps)
    kinds = set()
    for row in rows:
        answer, ops = solve(_question(row))
        assert ops == steps and row["answer"] == str(answer), _question(row)
        kinds |= {k for k in ("boxes", "finds", "gives", "packs", "shares") if k in _question(row)}
        assert AnswerJudge().judge(row, [f"Answer: {answer}", f"Answer: {answer + 1}"])[0].correct is True
    assert kinds == {"boxes", "finds", "gives", "packs", "shares"}  # every sentence kind is drawn


@pytest.mark.parametrize("steps", [2, 3])
def test_multi_step_splits_are_disjoint_and_deterministic(steps):
    train = make_problems(400, split="train", seed=2, steps=steps)
    held = make_problems(150, split="heldout", seed=2, steps=steps)
    assert not {_question(p) for p in train} & {_question(p) for p in held}
    assert len({p["id"] for p in train}) == 400
    assert make_problems(20, split="train", seed=2, steps=steps) == train[:20]
    assert make_problems(20, split="train", seed=3, steps=steps) != train[:20]
    one_step = {_question(p) for p in make_problems(400, split="train", seed=2)}
    assert not one_step & {_question(p) for p in train}


def test_bad_steps_are_errors():
    with pytest.raises(ValueError, match="steps: expected one of \\[1, 2, 3\\], got 4"):
        make_problems(3, split="train", steps=4)
    with pytest.raises(ValueError, match="kinds: only for steps=1"):
        make_problems(3, split="train", steps=2, kinds=("add",))
    with pytest.raises(TaskError, match="task.steps"):
        builtin_task("humaneval", steps=2)
    with pytest.raises(TaskError, match="task.steps"):
        load_task(source="data.jsonl", steps=3)


def test_task_steps_reaches_the_generator_from_a_recipe():
    cfg = load_config("arithmetic-steps2-dpo")
    assert cfg.task.steps == 2 and cfg.name == "arithmetic-steps2-dpo"
    task = stages.make_task(cfg.task)
    assert task.fingerprint() == {"builtin": "arithmetic", "seed": 0, "steps": 2}
    assert task.heldout(5) == make_problems(5, split="heldout", seed=0, steps=2)
    assert task.train(5, round=1) == make_problems(5, split="train", seed=1, steps=2)
    assert stages.make_task(load_config(None, ["task.steps=3"]).task).heldout(3) == \
        make_problems(3, split="heldout", steps=3)


@pytest.mark.parametrize("overrides, message", [
    (["task.steps=0"], "task.steps: expected one of [1, 2, 3], got 0"),
    (["task.steps=4"], "task.steps: expected one of [1, 2, 3], got 4"),
    (["task.name=humaneval", "task.steps=2"], "task.steps: only the built-in arithmetic task has steps"),
    (["task.source=data.jsonl", "task.steps=2"], "task.steps: only the built-in arithmetic task has steps; "
                                                 "got 2 with task.source"),
])
def test_task_steps_is_checked_at_load(overrides, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"prompt": "hi", "answer": "1"}\n')
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_cli_names_the_key_and_exits_2(capsys):
    assert cli.main(["loop", "arithmetic-dpo", "task.steps=5"]) == 2
    assert "config error: task.steps: expected one of [1, 2, 3], got 5" in capsys.readouterr().err
