"""The sandbox's ordinary behaviour: verdicts, per-test outcomes, limits, the plain-data pipe."""

from __future__ import annotations

import math
import os
import random

import pytest

from ratchet.judge.sandbox import Job, Limits, Sandbox, SandboxError
from ratchet.judge.sandbox_wire import decode, encode

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(Limits(wall_seconds=3.0, memory_bytes=512 << 20))
    yield sb
    sb.close()


def test_passing_program(sandbox):
    r = sandbox.run(Job(ADD, "add", ("assert candidate(1, 2) == 3", "assert add(2, 2) == 4")))
    assert r.verdict == "pass" and r.reason == "passed" and r.passed
    assert [t.passed for t in r.tests] == [True, True]


def test_each_test_is_reported_separately(sandbox):
    r = sandbox.run(Job(ADD, "add", ("assert add(1, 2) == 3", "assert add(1, 2) == 4", "assert add(0, 0) == 0")))
    assert r.verdict == "fail" and r.reason == "test_failed"
    assert [t.passed for t in r.tests] == [True, False, True]
    assert r.tests[1].message.startswith("AssertionError")


def test_syntax_error_and_missing_entry_point_are_load_errors(sandbox):
    r1, r2 = sandbox.run_many([Job("def add(a, b)\n    return 1\n", "add", ("pass",)),
                               Job(ADD, "sub", ("pass",))])
    assert (r1.reason, r2.reason) == ("load_error", "load_error")
    assert "SyntaxError" in r1.message and "'sub'" in r2.message
    assert r1.tests[0].passed is None


def test_setup_runs_in_the_test_process_and_its_helpers_call_the_program(sandbox):
    setup = "def twice(x):\n    return add(add(x, 0), x)\n"
    r = sandbox.run(Job(ADD, "add", ("assert twice(4) == 8",), setup=setup))
    assert r.passed, r.tests
    bad = sandbox.run(Job(ADD, "add", ("pass",), setup="raise RuntimeError('broken task')"))
    assert bad.reason == "setup_error" and "broken task" in bad.message


def test_builtin_exceptions_cross_the_pipe(sandbox):
    program = "def check(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    test = ("try:\n    check(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
            "else:\n    raise AssertionError")
    assert sandbox.run(Job(program, "check", (test,))).passed


def test_arguments_arrive_as_copies(sandbox):
    program = "def grab(xs):\n    xs.append(99)\n    return xs\n"
    test = "xs = [1]\nassert grab(xs) == [1, 99]\nassert xs == [1]"
    assert sandbox.run(Job(program, "grab", (test,))).passed


def test_output_is_captured(sandbox):
    program = "import sys\ndef f():\n    print('to stdout')\n    sys.stderr.write('to stderr\\n')\n    return 1\n"
    r = sandbox.run(Job(program, "f", ("assert f() == 1",)))
    assert r.passed and "to stdout" in r.stdout and "to stderr" in r.stderr


def test_timeout_kills_within_the_wall_clock_limit():
    sb = Sandbox(Limits(wall_seconds=0.5))
    try:
        r = sb.run(Job("def f():\n    while True:\n        pass\n", "f", ("f()",)))
    finally:
        sb.close()
    assert r.reason == "timeout" and r.verdict == "fail"
    assert r.wall_seconds < 1.5


def test_run_many_keeps_order(sandbox):
    jobs = [Job(f"def f():\n    return {i}\n", "f", (f"assert f() == {i}",)) for i in range(12)]
    results = sandbox.run_many(jobs)
    assert all(r.passed for r in results)


def test_isolation_is_reported(sandbox):
    iso = sandbox.isolation()
    assert {"netns", "pidns", "mountns", "uid"} <= set(iso) or os.geteuid() != 0


def test_require_isolation_refuses_without_it():
    sb = Sandbox(require_isolation=True)
    sb._isolation = {"netns": False, "pidns": True, "mountns": True, "uid": True}  # as if probed
    with pytest.raises(SandboxError, match="netns"):
        sb.run(Job(ADD, "add", ("pass",)))


def test_zygote_restarts_after_close(sandbox):
    sandbox.close()
    assert sandbox.run(Job(ADD, "add", ("assert add(1, 1) == 2",))).passed


def test_host_mounts_unchanged(sandbox):
    before = open("/proc/self/mountinfo").read()
    sandbox.run(Job(ADD, "add", ("pass",)))
    assert open("/proc/self/mountinfo").read() == before


def test_limits_are_validated():
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)


# ----------------------------------------------------------------------------- wire codec


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2 ** 200, -(2 ** 70), 1.5, -0.0, math.inf, 1 + 2j, "", "héllo\udc80", b"\x00\xff",
    bytearray(b"ab"), [1, [2, (3,)]], (), {"a": 1, (1, 2): [None]}, {1, 2}, frozenset({"x"}),
])
def test_plain_data_round_trips_exactly(value):
    out = decode(encode(value))
    assert out == value and type(out) is type(value)


def test_nan_round_trips():
    assert math.isnan(decode(encode(float("nan"))))


def test_subclasses_are_reduced_to_their_base_type():
    class Liar(int):
        def __eq__(self, other):
            return True

    class Tagged(tuple):
        pass

    assert type(decode(encode(Liar(3)))) is int and decode(encode(Liar(3))) == 3
    assert decode(encode(Tagged((1, 2)))) == (1, 2) and type(decode(encode(Tagged((1,))))) is tuple


@pytest.mark.parametrize("value", [object(), lambda: 1, iter([1]), type, [[[]]] * 0 + [object()]])
def test_other_objects_cannot_leave(value):
    with pytest.raises(TypeError, match="cannot leave the sandbox"):
        encode(value)


def test_malformed_bytes_raise_value_error_only():
    rng = random.Random(0)
    good = encode({"k": [1, 2.5, "s", (None, b"b")]})
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode(bytes(data[: rng.randint(0, len(data))]))
        except ValueError:
            pass
