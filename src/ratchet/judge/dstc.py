"""DSTC's execution stage: every self-generated code sample against every self-generated test.

DSTC (docs/algorithms.md#dstc) has the model write J code samples and K tests for a prompt, runs
each (code, test) pair, and picks chosen/rejected pairs from the binary matrix
``r[j][k] = code j passes test k``. This module parses the tests the model wrote into separate
single-assertion tests and builds that matrix; the selection rules live in ``data.pairing``.
``DSTCJudge`` (``JUDGES["dstc"]``) runs it per prompt row of the loop: the code samples are the
row's ``completions``, the tests its ``tests`` (parsed at generation, ``generate.tests``).

A test is one ``assert`` (or one loop, ``with`` or ``if`` block holding asserts) plus the
imports, assignments and helper definitions written before it, so each runs on its own. Asserts
inside ``def test_*():`` or ``def check(candidate):`` are flattened the same way. A test may call
the function by its name or as ``candidate``. Context that (re)defines or imports the function
under test is dropped: small models write their own solution above the asserts, and kept, it
would make every test check that copy instead of the code sample.

Every (code, test) pair runs in its own sandbox by default: model-written tests are untrusted
too, and a test sharing its process with others could forge their outcomes. With
``isolate_tests=False`` each code sample runs once against all its tests; when such a run stops
in the middle (a timeout, a crash, the program exiting), the test it stopped on counts as failed
and the remaining tests run again in a fresh sandbox.
"""

from __future__ import annotations

import ast
import re
from typing import Sequence

from ratchet.judge.base import JudgeInputError, Judgment
from ratchet.judge.code import UnitTestJudge, code_sandbox, task_from_record
from ratchet.judge.sandbox import Job, Sandbox

_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CONTEXT = (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.FunctionDef,
            ast.AsyncFunctionDef, ast.ClassDef)
_BLOCKS = (ast.For, ast.While, ast.With, ast.If, ast.Try)


def parse_tests(text: str, entry_point: str) -> list[str]:
    """Separate tests from model-written text (markdown fences or bare code); deduplicated, in
    order, and only those that mention ``entry_point`` or ``candidate``."""
    blocks = _FENCE.findall(text) or [text]
    tests: list[str] = []
    for block in blocks:
        try:
            tree = ast.parse(block)
        except SyntaxError:
            tests += _assert_lines(block)  # broken code: salvage the asserts that parse alone
            continue
        tests += _split(tree.body, [], {entry_point, "candidate"})
    wanted = re.compile(rf"\b({re.escape(entry_point)}|candidate)\b")
    return list(dict.fromkeys(t for t in tests if wanted.search(t)))


def _split(body: list[ast.stmt], context: list[str], under_test: set[str]) -> list[str]:
    context, tests = list(context), []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_test_function(node):
            tests += _split(node.body, context, under_test)
        elif isinstance(node, ast.Assert) or (isinstance(node, _BLOCKS) and _has_assert(node)):
            tests.append("\n".join(context + [ast.unparse(node)]))
        elif isinstance(node, _CONTEXT) and not _defines(node, under_test):
            context.append(ast.unparse(node))
    return tests


def _defines(node: ast.stmt, names: set[str]) -> bool:
    """Whether a context statement binds one of ``names`` (a def, a class, an import, an assignment)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name in names
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any((alias.asname or alias.name) in names for alias in node.names)
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return any(isinstance(n, ast.Name) and n.id in names for t in targets for n in ast.walk(t))


def _is_test_function(node) -> bool:
    return node.name.startswith("test") or node.name == "check"


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _assert_lines(block: str) -> list[str]:
    tests = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("assert"):
            try:
                ast.parse(line)
                tests.append(line)
            except SyntaxError:
                pass
    return tests


def pass_matrix(sandbox: Sandbox, codes: Sequence[str], tests: Sequence[str], entry_point: str,
                setup: str = "", isolate_tests: bool = True) -> list[list[bool]]:
    """``r[j][k]``: code sample j passes test k. Identical samples run once.

    ``isolate_tests`` (the default) gives every (code, test) pair its own sandbox run. The tests
    are model-written, so untrusted: one that shares a process with the others could write the
    others' outcomes to the result channel. ``False`` runs each code sample once against all its
    tests, about K times cheaper, for tests you trust."""
    unique = list(dict.fromkeys(codes))
    if isolate_tests:
        pairs = [(code, k) for code in unique for k in range(len(tests))]
        results = sandbox.run_many([Job(code, entry_point, (tests[k],), setup) for code, k in pairs])
        passed = {pair: r.passed for pair, r in zip(pairs, results)}
        return [[passed[(code, k)] for k in range(len(tests))] for code in codes]
    outcomes = _shared_runs(sandbox, unique, tests, entry_point, setup)
    return [[bool(p) for p in outcomes[code]] for code in codes]


def _shared_runs(sandbox, codes, tests, entry_point, setup) -> dict[str, list[bool | None]]:
    """One run per code sample with all its tests; a run that stops early is resumed after the
    test it stopped on, in a fresh sandbox."""
    outcomes: dict[str, list[bool | None]] = {code: [None] * len(tests) for code in codes}
    pending = {code: list(range(len(tests))) for code in codes if tests}
    while pending:
        order = list(pending)
        jobs = [Job(code, entry_point, tuple(tests[k] for k in pending[code]), setup) for code in order]
        next_pending = {}
        for code, result in zip(order, sandbox.run_many(jobs)):
            indices, row = pending[code], outcomes[code]
            for k, test in zip(indices, result.tests):
                row[k] = test.passed
            if result.reason in ("load_error", "setup_error", "sandbox_error"):
                for k in indices:
                    row[k] = bool(row[k])  # the program never ran: every test fails
                continue
            unfinished = [k for k in indices if row[k] is None]
            if unfinished and result.candidate_died_at is None:
                row[unfinished.pop(0)] = False  # the run stopped on this test (timeout, crash)
            if unfinished:
                next_pending[code] = unfinished
        pending = next_pending
    return outcomes


class DSTCJudge:
    """Scores each code sample by the fraction of the prompt's self-written tests it passes.

    ``details[j]["passed"]`` is row j of the pass matrix (K booleans, in the order of the row's
    ``tests``): what the ``dstc`` pair strategy selects from. ``correct`` is the verdict of the
    task's real tests (``ground_truth``, where the row has them in ``code.test``), for monitoring
    only (B-STaR's pass@k and judge discrimination: how well the self-written tests rank the
    samples); no DSTC step reads it. Otherwise ``correct`` is None."""

    def __init__(self, sandbox: Sandbox, *, ground_truth: UnitTestJudge | None = None, isolate_tests: bool = True):
        self.sandbox, self.ground_truth, self.isolate_tests = sandbox, ground_truth, isolate_tests

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        tests = prompt.get("tests")
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise JudgeInputError(f"prompt {prompt.get('id', '?')!r}: the dstc judge needs row['tests'], a list of test "
                           "sources (sample them with generate.tests > 0)")
        task = task_from_record(prompt, ("prompt", "entry_point"))
        matrix = pass_matrix(self.sandbox, [task.program(c) for c in completions], tests, task.entry_point,
                             setup=task.setup(), isolate_tests=self.isolate_tests)
        real = self.ground_truth is not None and bool(prompt["code"].get("test"))
        truth = self.ground_truth.judge(prompt, completions) if real else [None] * len(completions)
        return [Judgment(score=sum(row) / len(tests) if tests else 0.0, correct=t.correct if t else None,
                         detail={"passed": row, **({"real_tests": t.detail["reason"]} if t else {})})
                for row, t in zip(matrix, truth)]


def dstc_judge(*, wall_seconds: float = 2.0, ground_truth: bool = True, isolate_tests: bool = True,
               allow_weak_isolation: bool = False) -> DSTCJudge:
    """``JUDGES["dstc"]``. ``wall_seconds`` per (code, test) run: a self-written test is one assert,
    so a sample still running after that is stuck; ``ground_truth``: also run the task's real tests,
    where a row has them, for ``correct`` (monitoring); ``isolate_tests``: see ``pass_matrix``;
    ``allow_weak_isolation``: run even where the sandbox lacks some of its layers (see
    ``code.code_sandbox``)."""
    truth = UnitTestJudge(code_sandbox(10.0, allow_weak_isolation)) if ground_truth else None  # unit_tests' limits
    return DSTCJudge(code_sandbox(wall_seconds, allow_weak_isolation), ground_truth=truth, isolate_tests=isolate_tests)
