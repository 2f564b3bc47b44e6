"""Run untrusted Python programs against tests: one sandboxed process tree per program.

This module is the harness side: it starts ``sandbox_child.py`` in a fresh interpreter
(``python -I -S``: isolated, no site) in its own session and process group, with a temporary
working directory and a scrubbed environment (PATH, HOME, locale; no tokens or secrets). It
feeds the job, reads stdout, stderr and the result channel with caps, kills the whole group at
the wall-clock deadline, and decides the verdict. ``Sandbox.run_many`` runs programs in parallel
on a thread pool (each thread only waits on its child's pipes).

Containment, in layers (``RunResult.isolation`` says which ones were in effect):

- resource limits in every sandboxed process: CPU time, address space, file size, open files,
  processes (per uid), no core files; the wall-clock deadline kills the process group;
- when the harness runs as root: the program and the tests run under two fresh random uids, so
  the process limit counts only their own processes (root is exempt from it), the program cannot
  signal the harness or the tests, and ``no_new_privs`` blocks setuid binaries;
- where the kernel allows it (root): new network namespace (no interface but a down loopback),
  new pid namespace (the tests run as its pid 1, so when they end or are killed, the kernel kills
  every process left, including daemonised grandchildren), new mount namespace (every mount
  read-only, private size-capped tmpfs on the work dir, /tmp, /var/tmp and /dev/shm, a fresh
  /proc that shows only the caller's own processes, ``hide_paths`` masked);
- the Python socket layer is disabled in any case (an audit hook, which cannot be removed).

Verdicts are decided by the harness, not by the program's exit status: the tests run in their own
process and only call the program through a pipe that carries plain data (see
``sandbox_child``). A run passes only when the test process reports, on a channel the program's
process does not hold, that every test ran and passed, within the limits. An always-equal object
cannot cross the pipe; ``os._exit(0)`` before the tests leaves them without a candidate, so they
fail.

Without root (or when namespaces are refused) the same code runs with fewer layers: limits,
process group, socket hook. That is enough for honest mistakes (infinite loops, memory hogs), not
for hostile programs; ``Sandbox(require_isolation=True)`` refuses to run without the full set.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ratchet.judge.sandbox_child import encode

_CHILD = str(Path(__file__).with_name("sandbox_child.py"))
_FULL_ISOLATION = ("netns", "pidns", "mountns", "uid")
_MAX_MESSAGE_BYTES = 16 << 20


class SandboxError(RuntimeError):
    """The sandbox itself could not run (never a verdict on the program)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Each sandboxed process gets the per-process ones separately."""

    wall_seconds: float = 10.0
    """Wall-clock time for the whole run, startup included; then the process group is killed."""
    cpu_seconds: int = 10
    """CPU time per process (RLIMIT_CPU)."""
    memory_bytes: int = 1 << 30
    """Address space per process (RLIMIT_AS)."""
    file_size_bytes: int = 16 << 20
    """Largest file a process may write (RLIMIT_FSIZE)."""
    disk_bytes: int = 64 << 20
    """Size of each private tmpfs (work dir, /tmp, ...) when a mount namespace is available."""
    max_processes: int = 32
    """Processes and threads per sandbox uid (RLIMIT_NPROC)."""
    max_open_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    output_bytes: int = 1 << 20
    """Cap on each of stdout and stderr; a program that writes more is killed and fails."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value}")


@dataclass(frozen=True)
class Job:
    """A program and the tests to run against it."""

    program: str
    """Untrusted source; runs in its own process, which must define ``entry_point``."""
    entry_point: str
    """The function the tests call, under this name and as ``candidate``."""
    tests: tuple[str, ...]
    """Test sources, run one after another; a test passes when it runs without raising."""
    setup: str = ""
    """Trusted source run once in the test process before the tests (task helpers, imports)."""


@dataclass
class TestOutcome:
    passed: bool | None
    """None: the test never ran (the program failed to load, or the run stopped earlier)."""
    message: str = ""


@dataclass
class RunResult:
    verdict: str
    """"pass", "fail", or "sandbox_error" (the harness failed; no verdict on the program)."""
    reason: str
    """passed | test_failed | load_error | setup_error | timeout | output_limit | crashed | ..."""
    tests: list[TestOutcome]
    stdout: str = ""
    stderr: str = ""
    wall_seconds: float = 0.0
    isolation: dict[str, bool] = field(default_factory=dict)
    uids: tuple[int, int] | None = None
    """(tests uid, program uid) when the run dropped privileges."""
    candidate_died_at: int | None = None
    """Index of the test during which the program's process died, if it did."""
    message: str = ""
    """Details of a load or setup error."""

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


class Sandbox:
    """Runs jobs; ``run`` is thread-safe, ``run_many`` uses ``workers`` threads."""

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, hide_paths: Sequence[str] = (),
                 python: str | None = None, site_packages: bool = False, require_isolation: bool = False):
        self.limits = limits
        self.workers = workers or os.cpu_count() or 1
        self.hide_paths = tuple(str(p) for p in hide_paths)
        self.python = python or sys.executable
        self.site_packages = site_packages
        self.require_isolation = require_isolation
        self._root = os.geteuid() == 0
        self._isolation: dict[str, bool] | None = None

    def run(self, job: Job) -> RunResult:
        if self.require_isolation:
            missing = [k for k in _FULL_ISOLATION if not self.isolation().get(k)]
            if missing:
                raise SandboxError(f"require_isolation: not available here: {missing}")
        return self._run(job)

    def run_many(self, jobs: Sequence[Job]) -> list[RunResult]:
        if len(jobs) <= 1:
            return [self.run(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.run, jobs))

    def isolation(self) -> dict[str, bool]:
        """Which containment layers a run gets on this machine (probed once)."""
        if self._isolation is None:
            probe = self._run(Job("def f():\n    return 1\n", "f", ("assert candidate() == 1",)))
            if probe.verdict == "sandbox_error":
                raise SandboxError(f"the sandbox cannot start here: {probe.reason}\n{probe.stderr}")
            self._isolation = probe.isolation
        return self._isolation

    def _run(self, job: Job) -> RunResult:
        if not isinstance(job.tests, (tuple, list)) or not all(isinstance(t, str) for t in job.tests):
            raise TypeError("Job.tests must be a tuple of source strings")
        uids = _fresh_uids() if self._root else None
        config = {
            "program": job.program, "entry_point": job.entry_point, "uids": list(uids) if uids else None,
            "namespaces": self._root, "hide": list(self.hide_paths), "disk_bytes": self.limits.disk_bytes,
            "max_message_bytes": _MAX_MESSAGE_BYTES, "limits": self._rlimits(),
        }
        tests = {"setup": job.setup, "tests": list(job.tests), "entry_point": job.entry_point}
        with tempfile.TemporaryDirectory(prefix="ratchet-sandbox-") as workdir:
            config["workdir"] = workdir
            payload = _frame(encode(config)) + _frame(encode(tests))
            streams, wall, ended = self._execute(payload, workdir, uids)
        result = _verdict(streams, ended, len(job.tests))
        result.wall_seconds, result.uids = wall, uids
        return result

    def _rlimits(self) -> dict:
        lim = self.limits
        # Root is exempt from RLIMIT_NPROC and has fresh uids; otherwise the limit counts all of
        # this user's processes, so it is set relative to how many exist now.
        nproc = lim.max_processes if self._root else _count_processes(os.getuid()) + lim.max_processes
        return {"cpu_seconds": int(lim.cpu_seconds), "memory_bytes": lim.memory_bytes,
                "file_size_bytes": lim.file_size_bytes, "max_open_files": lim.max_open_files, "nproc": nproc}

    def _execute(self, payload: bytes, workdir: str, uids) -> tuple[dict, float, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        flags = ["-I", "-B"] + ([] if self.site_packages else ["-S"])
        result_r, result_w = os.pipe()
        start = time.monotonic()
        try:
            proc = subprocess.Popen([self.python, *flags, _CHILD, str(result_w)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(result_w,),
                                    cwd=workdir, env=env, start_new_session=True)
        except OSError as e:
            os.close(result_r)
            return {"result": b"", "stdout": b"", "stderr": str(e).encode()}, 0.0, "spawn_failed"
        finally:
            os.close(result_w)
        try:
            streams, ended = _pump(proc, result_r, payload, start + self.limits.wall_seconds, self.limits.output_bytes)
        finally:
            _kill_group(proc)
            os.close(result_r)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                pipe.close()
            if uids:
                _sweep_uids(uids)  # no-op when the pid namespace already killed everything
        return streams, time.monotonic() - start, ended


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _fresh_uids() -> tuple[int, int]:
    # Random uids far above any real account: nothing else runs under them, so their process
    # count starts at zero and a sweep by uid can only hit this run's processes.
    rng = random.SystemRandom()
    a = rng.randrange(1 << 20, 1 << 30)
    return a, a + 1


def _count_processes(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                count += os.stat(f"/proc/{pid}").st_uid == uid
            except OSError:
                pass
    return count


def _pump(proc: subprocess.Popen, result_fd: int, payload: bytes, deadline: float, cap: int) -> tuple[dict, str]:
    """Feed stdin, drain stdout/stderr/result until the child exits; returns (bytes, how it ended)."""
    sel = selectors.DefaultSelector()
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", result_fd: "result"}
    data = {name: bytearray() for name in names.values()}
    for fd in names:
        sel.register(fd, selectors.EVENT_READ)
    stdin = proc.stdin.fileno()
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_WRITE)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    view, exited_at, ended = memoryview(payload), None, "exited"
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return data, "timeout"
            if exited_at is None and pidfd is None and _has_exited(proc.pid):
                exited_at = now
            if exited_at is not None and (len(sel.get_map()) == 0 or now - exited_at > 0.2):
                return data, ended  # escaped holders of our pipes are not waited for
            wait = deadline - now if pidfd is not None else min(deadline - now, 0.01)
            for key, _ in sel.select(timeout=max(wait, 0.0) if exited_at is None else 0.05):
                fd = key.fd
                if fd == stdin:
                    try:
                        view = view[os.write(fd, view[:1 << 16]):]
                    except (BrokenPipeError, BlockingIOError) as e:
                        view = view[:0] if isinstance(e, BrokenPipeError) else view
                    if not view:
                        sel.unregister(fd)
                        proc.stdin.close()
                elif fd == pidfd:
                    sel.unregister(fd)
                    exited_at = time.monotonic()
                else:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    buf = data[names[fd]]
                    buf += chunk
                    if len(buf) > cap:
                        del buf[cap:]
                        return data, f"output_limit:{names[fd]}"
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the pid (and group id) stays reserved until _kill_group.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc: subprocess.Popen) -> None:
    # The bootstrap is not reaped yet (a zombie at worst), so its group id cannot have been reused.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _sweep_uids(uids: tuple[int, int]) -> None:
    """Kill every process still running under this run's uids (a daemon that left the group)."""
    for _ in range(100):
        found = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                owner = os.stat(f"/proc/{pid}").st_uid
                if owner in uids:
                    os.kill(int(pid), signal.SIGKILL)
                    found = True
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.01)


def _parse_events(raw: bytes) -> list[list[str]]:
    return [line.split("\t") for line in raw.decode("utf-8", "replace").splitlines() if line]


def _verdict(streams: dict, ended: str, n_tests: int) -> RunResult:
    events = _parse_events(bytes(streams["result"]))
    tests = [TestOutcome(None) for _ in range(n_tests)]
    isolation, status, died_at, done = None, None, None, False
    for ev in events:
        kind = ev[0]
        if kind == "I":
            isolation = {k: v == "1" for k, v in (f.split("=", 1) for f in ev[1:] if "=" in f)}
        elif kind == "L" and ev[1:2] == ["error"]:
            status = ("load_error", ev[2] if len(ev) > 2 else "")
        elif kind == "S":
            status = ("setup_error", ev[1] if len(ev) > 1 else "")
        elif kind == "T" and len(ev) >= 3 and ev[1].isdigit() and int(ev[1]) < n_tests:
            tests[int(ev[1])] = TestOutcome(ev[2] == "pass", ev[3] if len(ev) > 3 else "")
        elif kind == "X" and len(ev) > 1 and ev[1].isdigit():
            died_at = int(ev[1])
        elif kind == "D":
            done = True
    out = {"stdout": bytes(streams["stdout"]).decode("utf-8", "replace"),
           "stderr": bytes(streams["stderr"]).decode("utf-8", "replace")}
    if isolation is None:
        reason = "timeout" if ended == "timeout" else f"sandbox did not start ({ended})"
        return RunResult("sandbox_error", reason, tests, candidate_died_at=died_at, **out)
    if ended != "exited":
        reason = "timeout" if ended == "timeout" else "output_limit"
    elif status is not None:
        reason, out["message"] = status
    elif done and all(t.passed for t in tests):
        return RunResult("pass", "passed", tests, isolation=isolation, **out)
    elif any(t.passed is False for t in tests):
        reason = "test_failed"
    else:
        reason = "crashed"
    return RunResult("fail", reason, tests, isolation=isolation, candidate_died_at=died_at, **out)
