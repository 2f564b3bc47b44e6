"""Run untrusted Python programs against tests: one sandboxed process tree per program.

This module is the harness side. It starts one long-lived zygote (``sandbox_child.py`` under
``python -I -S``: isolated, no site, scrubbed environment with no tokens or secrets) and asks it
to fork a worker per job, so a job costs two forks rather than an interpreter start-up. Each
worker gets its own session and process group, a temporary working directory and the job's
pipes; the harness feeds the job, reads stdout, stderr and the result channel with caps, kills
the whole group at the wall-clock deadline, and decides the verdict. ``Sandbox.run_many`` runs
jobs in parallel on a thread pool (each thread only waits on its worker's pipes).

Containment, in layers (``RunResult.isolation`` says which ones were in effect; docs/security.md
says what each stops and which tests show it):

- resource limits in every sandboxed process: CPU time, address space, file size, open files,
  processes per uid, no core files; the wall-clock deadline kills the process group;
- a cgroup per job (v2, or v1's memory/pids/cpu hierarchies, where the harness may create one):
  memory, processes and CPU for the job as a whole, killed and removed after it; without one, the
  process limit is cut so that processes x address space fits the job's memory budget
  (``Limits.job_memory_bytes``, at most this machine's memory shared by the parallel jobs);
- when the harness runs as root: the program and the tests run under two fresh random uids, so
  the process limit counts only their own processes, neither can signal or trace the harness, each
  other or another job, and ``no_new_privs`` blocks setuid binaries. Not root: the zygote enters an
  unprivileged user namespace mapping only the harness's uid (as bubblewrap does), each job gets a
  nested user namespace of its own (so the process limit counts each job apart), and every
  sandboxed process drops all its capabilities;
- namespaces of its own for every job: network (no interface but a loopback that is down, so no
  TCP/UDP and no abstract Unix socket outside the job), IPC (System V and POSIX message queues:
  none shared, capped, gone with the job), pid (the program is pid 1: when it ends or is killed,
  the kernel kills every process left in it), mount, UTS and cgroup;
- a minimal filesystem view (built once by the zygote, then copied per job): a read-only root
  holding /usr, a few /etc files, Python's installation and five device nodes; no /run, /var, host
  /tmp, home, repository or run directory, so no host Unix socket, no run file (prompts, tests,
  answers) and no device beyond null/zero/full/random/urandom; each job gets its own size-capped
  tmpfs /tmp (its work dir) and /dev/shm, and a /proc that shows only its own processes;
- a fresh, empty session keyring (the zygote's), so no key of the harness's is reachable;
- a seccomp filter in every sandboxed process (the zygote's, inherited): no keyring calls, no
  setns, no user namespaces (other namespaces and mounts need a privilege no program has), no
  ptrace, process_vm_*, bpf, perf, userfaultfd, io_uring, no sockets but AF_UNIX; where the tests'
  process shares the harness's uid, it also may not fork or signal another process;
- the Python socket layer is disabled in any case (an audit hook, which cannot be removed).

Verdicts are decided by the harness, not by the program or its exit status. The tests run in a
separate process and reach the program only through a pipe that carries plain data, decoded into
fresh built-in objects (``sandbox_wire``). A run passes only when that process reports, on a
channel the program's process does not hold, that every test ran and passed, within the limits.
So an always-equal object cannot cross the pipe, patching ``builtins`` changes only the program's
own process, and ``os._exit(0)`` before the tests leaves them without a program to call: fail.
No nonce is needed: nothing the program can write reaches the result channel.

Where neither root nor an unprivileged user namespace is allowed, the same code runs with fewer
layers: limits, process group, socket hook, seccomp. That is enough for honest mistakes (infinite
loops, memory hogs), not for hostile programs; ``Sandbox(require_isolation=True)`` refuses to run
without the full set (``missing_layers`` names what is missing), and so do the code judges unless
the recipe sets ``judge.params.allow_weak_isolation: true``.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ratchet.judge.sandbox_process import Cgroups, Zygote, count_processes, run_in_worker, sweep_uids
from ratchet.judge.sandbox_wire import encode

_CHILD = str(Path(__file__).with_name("sandbox_child.py"))
REQUIRED_LAYERS = ("netns", "ipcns", "pidns", "mountns", "view", "proc", "private_tmp", "keyring", "seccomp",
                   "job_memory")
"""Layers without which a hostile program is not contained (plus "uid" or "userns": the sandboxed
processes must not act as the harness's user with its privileges)."""
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
    job_memory_bytes: int = 2 << 30
    """Memory of the whole job (all its processes, tmpfs, shared memory): the cgroup's limit, or,
    without a cgroup, what processes x ``memory_bytes`` must fit in. Never more than this
    machine's memory divided among the parallel jobs."""
    cpus: float = 1.0
    """CPUs the whole job may use at once (cgroup cpu.max), so at most ``cpus x wall_seconds`` of
    CPU time in all."""

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
    __test__ = False  # not a pytest test class, despite the name
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
    usage: dict = field(default_factory=dict)
    """What the whole job used, where its cgroup tells: memory_peak_bytes, cpu_seconds."""

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


class Sandbox:
    """Runs jobs; ``run`` is thread-safe, ``run_many`` uses ``workers`` threads.

    ``hide_paths``: files or directories the program must not see (e.g. the task file holding the
    tests) where they lie inside the view (Python's installation, /usr): they read as empty; the
    harness's working directory is hidden the same way. ``site_packages``: let programs import the
    harness's installed packages (slower start; the environment's directory joins the view);
    ``hide_home``: mask the harness user's home directory (only matters where the view could not
    be built); ``require_isolation``: raise ``SandboxError`` rather than run without the full set
    of layers (``REQUIRED_LAYERS``)."""

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, hide_paths: Sequence[str] = (),
                 site_packages: bool = False, hide_home: bool = True, require_isolation: bool = False):
        if not sys.platform.startswith("linux"):
            raise SandboxError(f"the sandbox runs on Linux only (pidfd, /proc, prctl), not {sys.platform}")
        self.limits = limits
        self.workers = workers or os.cpu_count() or 1
        self.hide_paths = tuple(str(p) for p in hide_paths)
        self.site_packages = site_packages
        self.require_isolation = require_isolation
        self._root = os.geteuid() == 0
        self._mode: str | None = None
        """"root", "userns" or "weak" to force a mode (tests); None: root if root, else userns."""
        # The interpreter's installation must stay readable under another uid; the harness user's
        # home (tokens, caches, keys) is masked unless hide_home is False.
        prefixes = {sys.base_prefix, sys.base_exec_prefix} | ({sys.prefix, sys.exec_prefix} if site_packages else set())
        self._needs = sorted(os.path.realpath(p) for p in prefixes)
        home = os.path.realpath(os.path.expanduser("~"))
        self._mask = [home] if hide_home and home != "/" else []
        self._isolation: dict[str, bool] | None = None
        self._zygote: Zygote | None = None
        self._cgroups: Cgroups | None = None
        self._cgroups_tried = False
        self._lock, self._probe_lock = threading.Lock(), threading.Lock()

    def run(self, job: Job) -> RunResult:
        if self.require_isolation:
            missing = self.missing_layers()
            if missing:
                raise SandboxError(f"require_isolation: not available here: {missing}")
        else:
            try:
                self.isolation()  # the probe decides whether jobs get a cgroup or the process bound
            except SandboxError:
                pass  # the job itself reports it: verdict "sandbox_error"
        return self._run(job)

    def run_many(self, jobs: Sequence[Job]) -> list[RunResult]:
        if len(jobs) <= 1:
            return [self.run(job) for job in jobs]
        try:
            self.isolation()
        except SandboxError:
            pass
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.run, jobs))

    def isolation(self) -> dict[str, bool]:
        """Which containment layers a run gets on this machine (probed once)."""
        with self._probe_lock:
            if self._isolation is None:
                probe = self._probe()
                if not probe.isolation.get("cgroup") and self._cgroups is not None:
                    self._cgroups.close()  # the worker could not be moved into one: bound processes instead
                    self._cgroups = None
                    probe = self._probe()
                self._isolation = dict(probe.isolation, job_memory=True)
        return self._isolation

    def _probe(self) -> RunResult:
        probe = self._run(Job("def f():\n    return 1\n", "f", ("assert candidate() == 1",)))
        if probe.verdict == "sandbox_error":
            raise SandboxError(f"the sandbox cannot start here: {probe.reason}\n{probe.stderr}")
        return probe

    def missing_layers(self) -> list[str]:
        """The layers of ``REQUIRED_LAYERS`` (and "uid or userns") that runs here lack."""
        isolation = self.isolation()
        missing = [k for k in REQUIRED_LAYERS if not isolation.get(k)]
        if not (isolation.get("uid") or isolation.get("userns")):
            missing.append("uid or userns")
        if isolation.get("userns"):
            missing += [k for k in ("job_userns", "caps_dropped", "proc_protected") if not isolation.get(k)]
        if not (isolation.get("ipc_limits") or isolation.get("cgroup")):
            missing.append("ipc_limits or cgroup")  # System V shared memory would escape the job's budget
        return missing

    def close(self) -> None:
        """Stop the zygote process (also happens when the Sandbox is garbage-collected) and
        remove this Sandbox's cgroup."""
        with self._lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
            if self._cgroups is not None:
                self._cgroups.close()
                self._cgroups = None
                self._cgroups_tried = False

    def _run(self, job: Job) -> RunResult:
        if not isinstance(job.tests, (tuple, list)) or not all(isinstance(t, str) for t in job.tests):
            raise TypeError("Job.tests must be a tuple of source strings")
        try:
            zygote = self._zygote_ready()
        except SandboxError as e:
            return RunResult("sandbox_error", "sandbox did not start", [TestOutcome(None) for _ in job.tests],
                             stderr=str(e))
        mode = zygote.status["mode"]
        # Fresh uids whenever the harness is root, also where namespaces are refused (weak mode).
        uids = _fresh_uids() if mode == "root" or (mode == "weak" and self._root) else None
        cgroup = self._cgroups.job(self._job_memory(), self.limits.max_processes + 1, self.limits.cpus,
                                   pids=mode != "root") if self._cgroups is not None else None
        # In a mount namespace the work dir lives in the job's own /tmp; the host never sees it.
        host_dir = tempfile.TemporaryDirectory(prefix="ratchet-sandbox-") if mode == "weak" else nullcontext(None)
        with host_dir as workdir:
            config = {
                "program": job.program, "entry_point": job.entry_point, "uids": list(uids) if uids else None,
                "hide": self._hidden(), "disk_bytes": self.limits.disk_bytes,
                "needs": self._needs, "mask": self._mask, "max_message_bytes": _MAX_MESSAGE_BYTES,
                "cgroup": cgroup is not None,
                "limits": self._rlimits(mode, cgroup is not None, zygote.status.get("job_userns", False)),
                "workdir": workdir,
            }
            token = secrets.token_hex(8)
            tests = {"setup": job.setup, "tests": list(job.tests), "entry_point": job.entry_point, "token": token}
            payload = _frame(encode(config)) + _frame(encode(tests))
            start = time.monotonic()
            joined = []
            try:
                streams, ended = self._execute(zygote, payload, uids, token,
                                               (lambda pid: joined.append(cgroup.add(pid))) if cgroup else None)
            finally:
                usage = cgroup.finish() if cgroup is not None else {}
            wall = time.monotonic() - start
        result = _verdict(streams, ended, len(job.tests), token)
        result.wall_seconds = wall
        result.uids = uids if result.isolation.get("uid") else None
        result.usage = usage
        if result.isolation:
            result.isolation.update(cgroup=joined == [True], cgroup_cpu=joined == [True] and cgroup.cpu,
                                    job_memory=True)
        return result

    def _hidden(self) -> list[str]:
        """``hide_paths`` and the harness's working directory (where run files live), unless that
        directory holds what programs need (Python, /usr): then only the view keeps it out."""
        cwd = os.path.realpath(os.getcwd())
        keep = [*self._needs, "/usr", "/etc", "/bin", "/lib", "/dev", "/proc", "/tmp"]
        inside = any(k == cwd or k.startswith(cwd.rstrip("/") + "/") for k in keep)
        return [*self.hide_paths, *([] if inside else [cwd])]

    def _job_memory(self) -> int:
        """The job's memory budget: ``job_memory_bytes``, but never more than this machine's memory
        shared among the parallel jobs (and never less than one process's)."""
        try:
            machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            machine = self.limits.job_memory_bytes * self.workers
        share = machine * 3 // 4 // max(1, self.workers)
        return max(self.limits.memory_bytes, min(self.limits.job_memory_bytes, share))

    def _rlimits(self, mode: str, cgroup: bool, job_userns: bool = False) -> dict:
        lim = self.limits
        # Without a cgroup, memory for the job is bounded by processes x address space.
        processes = lim.max_processes
        if not cgroup:
            processes = max(1, min(processes, self._job_memory() // lim.memory_bytes))
        # Fresh uids (root) or a user namespace per job: RLIMIT_NPROC counts the job's own
        # processes (the tests' one too). Otherwise it counts all of this user's processes, so it
        # is set relative to how many exist now.
        if mode == "root":
            nproc = processes
        elif job_userns:
            nproc = processes + 1
        else:
            nproc = count_processes(os.getuid()) + processes
        return {"cpu_seconds": int(lim.cpu_seconds), "memory_bytes": lim.memory_bytes,
                "file_size_bytes": lim.file_size_bytes, "max_open_files": lim.max_open_files, "nproc": nproc}

    def _zygote_ready(self) -> Zygote:
        with self._lock:
            if self._zygote is None or not self._zygote.alive():
                flags = ["-I", "-B"] + ([] if self.site_packages else ["-S"])
                mode = self._mode or ("root" if self._root else "userns")
                spec = {"mode": mode, "needs": self._needs, "executable": sys.executable, "hide": self._hidden()}
                try:
                    self._zygote = Zygote([sys.executable, *flags, _CHILD], encode(spec))
                except OSError as e:
                    raise SandboxError(f"the sandbox cannot start here: {e}") from None
                weakref.finalize(self, self._zygote.close)
            if not self._cgroups_tried:
                self._cgroups_tried = True
                self._cgroups = Cgroups.create()
                if self._cgroups is not None:
                    weakref.finalize(self, self._cgroups.close)
            return self._zygote

    def _execute(self, zygote: Zygote, payload: bytes, uids, token: str, on_spawn) -> tuple[dict, str]:
        """One job through the zygote; then, unless the worker confirmed that nothing is left,
        kill whatever still runs under this run's uids."""
        streams, ended = run_in_worker(zygote, payload, time.monotonic() + self.limits.wall_seconds,
                                       self.limits.output_bytes, on_spawn)
        if uids and not _all_reaped(streams["result"], token):
            sweep_uids(uids)
        return streams, ended


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _fresh_uids() -> tuple[int, int]:
    # Random uids far above any real account: nothing else runs under them, so their process
    # count starts at zero and a sweep by uid can only hit this run's processes.
    rng = random.SystemRandom()
    a = rng.randrange(1 << 20, 1 << 30)
    return a, a + 1


def _all_reaped(result: bytes, token: str) -> bool:
    """The worker confirmed that the candidate, pid 1 of its namespace, is gone (so is the rest)."""
    events = _parse_events(bytes(result), token)
    return ["Z"] in events and "pidns=1" in (events[0] if events else [])


def _parse_events(raw: bytes, token: str) -> list[list[str]]:
    """The first line (isolation flags, written before any untrusted code ran), then only the
    lines that carry this run's token, without it."""
    lines = [line.split("\t") for line in raw.decode("utf-8", "replace").splitlines() if line]
    if not lines or lines[0][0] != "I":
        return []
    return lines[:1] + [fields[1:] for fields in lines[1:] if fields[0] == token and len(fields) > 1]


def _verdict(streams: dict, ended: str, n_tests: int, token: str) -> RunResult:
    events = _parse_events(bytes(streams["result"]), token)
    tests = [TestOutcome(None) for _ in range(n_tests)]
    isolation, status, died_at, done = None, None, None, False
    if events:
        isolation = {k: v == "1" for k, v in (f.split("=", 1) for f in events[0][1:] if "=" in f)}
    for ev in events[1:]:
        kind = ev[0]
        if kind == "L" and ev[1:2] == ["error"]:
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
