"""The harness's side of the sandbox's processes: the zygote, one job's pipes and kill, cgroups.

``Zygote`` starts ``sandbox_child.py --zygote`` once and asks it for a worker per job;
``run_in_worker`` feeds that worker its job on stdin, drains its stdout, stderr and result pipe
(each capped), waits for it to exit or for the deadline, then kills its process group.
``Cgroups`` gives each job a cgroup of its own (memory, processes and CPU for the job as a whole),
into which the worker is moved before it is sent its job, and which is killed and removed after.
``sweep_uids`` kills what is left under a run's uids when no pid namespace did it already.
Verdicts are not made here (see ``judge.sandbox``).
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import socket
import subprocess
import threading
import time


class Zygote:
    """The long-lived root-side process that forks one worker per job (see sandbox_child)."""

    def __init__(self, argv: list[str], spec: bytes):
        """``spec``: the encoded view spec (see ``sandbox_child.zygote``); ``status`` is the reply:
        the mode and view the zygote got."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "OMP_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen([*argv, "--zygote", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/", env=env,
                                         start_new_session=True)
        finally:
            theirs.close()
        self.sock, self.lock, self.owner = ours, threading.Lock(), os.getpid()
        from ratchet.judge.sandbox_wire import decode

        try:
            ours.send(spec)
            reply = ours.recv(1 << 16)
            self.status = decode(reply) if reply else None
        except (OSError, ValueError):
            self.status = None
        if not isinstance(self.status, dict):
            self.close()
            raise OSError("the sandbox zygote process did not start")

    def alive(self) -> bool:
        # A forked copy of the harness must not share this zygote's socket with its parent.
        return self.owner == os.getpid() and self.proc.poll() is None

    def spawn(self, fds: list[int]) -> int:
        with self.lock:
            socket.send_fds(self.sock, [b"J"], fds)
            reply = self.sock.recv(64)
        if not reply:
            raise OSError("the sandbox zygote process exited")
        return int(reply)

    def reap(self, pid: int) -> None:
        with self.lock:
            try:
                self.sock.send(b"R%d" % pid)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()  # the zygote sees EOF and exits; its workers die with it (PDEATHSIG)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_in_worker(zygote: Zygote, payload: bytes, deadline: float, cap: int,
                  on_spawn=None) -> tuple[dict, str]:
    """Run one job: returns the bytes of stdout, stderr and the result channel, and how it ended
    ("exited", "timeout", "output_limit:<stream>", "spawn_failed"). ``on_spawn(pid)`` runs before
    the job is fed to the worker (which waits for it): the moment to move it into a cgroup."""
    pipes = {name: os.pipe() for name in ("stdin", "stdout", "stderr", "result")}
    ours = {name: pipes[name][1 if name == "stdin" else 0] for name in pipes}
    theirs = [pipes["stdin"][0], pipes["stdout"][1], pipes["stderr"][1], pipes["result"][1]]
    try:
        pid = zygote.spawn(theirs)
    except OSError as e:
        for fd in (*ours.values(), *theirs):
            os.close(fd)
        return {"result": b"", "stdout": b"", "stderr": str(e).encode()}, "spawn_failed"
    for fd in theirs:
        os.close(fd)
    try:
        if on_spawn is not None:
            on_spawn(pid)
        return _pump(pid, ours, payload, deadline, cap)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)  # still a zombie at worst: the group id is ours
        except (ProcessLookupError, PermissionError):
            pass
        zygote.reap(pid)
        for fd in ours.values():
            os.close(fd)


def _pump(pid: int, fds: dict[str, int], payload: bytes, deadline: float, cap: int) -> tuple[dict, str]:
    """Feed stdin, drain stdout/stderr/result until the worker exits; returns (bytes, how it ended)."""
    sel = selectors.DefaultSelector()
    readers = {fds[name]: name for name in ("stdout", "stderr", "result")}
    data = {name: bytearray() for name in readers.values()}
    for fd in readers:
        sel.register(fd, selectors.EVENT_READ)
    stdin = fds["stdin"]
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_WRITE)
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ)
    view, exited_at = memoryview(payload), None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return data, "timeout"
            if exited_at is not None and (len(sel.get_map()) == 0 or now - exited_at > 0.2):
                return data, "exited"  # escaped holders of our pipes are not waited for
            wait = deadline - now if exited_at is None else min(deadline - now, 0.05)
            for key, _ in sel.select(timeout=wait):
                fd = key.fd
                if fd == stdin:
                    try:
                        view = view[os.write(fd, view[:1 << 16]):]
                    except BrokenPipeError:
                        view = view[:0]
                    if not view:
                        sel.unregister(fd)
                elif fd == pidfd:
                    sel.unregister(fd)
                    exited_at = time.monotonic()
                else:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    buf = data[readers[fd]]
                    buf += chunk
                    if len(buf) > cap:
                        del buf[cap:]
                        return data, f"output_limit:{readers[fd]}"
    finally:
        sel.close()
        os.close(pidfd)


def count_processes(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                count += os.stat(f"/proc/{pid}").st_uid == uid
            except OSError:
                pass
    return count


def sweep_uids(uids: tuple[int, int]) -> None:
    """Kill every live process still running under this run's uids (one that left the group and
    the pid namespace, or ran without one). Zombies are dead already; init reaps them."""
    for _ in range(100):
        found = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid in uids and not _is_zombie(pid):
                    os.kill(int(pid), signal.SIGKILL)
                    found = True
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.01)


def _is_zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


# ----------------------------------------------------------------------------- cgroups


class Cgroups:
    """A cgroup of this Sandbox's own and one child per job, on cgroup v2 (or v1's memory, pids and
    cpu hierarchies), limiting memory, processes and CPU for the whole job.

    v2: a new group beside the harness's own (the harness's group holds processes, so it cannot
    delegate controllers itself), or under the root. v1: under the harness's own group in each
    hierarchy. ``create`` returns None where no such group can be made (not root, no delegation,
    a read-only /sys/fs/cgroup); the sandbox then bounds processes times memory instead."""

    def __init__(self, version: str, bases: dict[str, str]):
        self.version, self.bases, self.lock, self.count = version, bases, threading.Lock(), 0
        self.cpu = "cpu" in bases if version == "v1" else _has_controller(bases["v2"], "cpu", "cgroup.subtree_control")

    @classmethod
    def create(cls) -> "Cgroups | None":
        mounts, own = _cgroup_mounts(), _own_cgroups()
        name = f"ratchet-sandbox-{os.getpid()}-{secrets.token_hex(3)}"
        v2 = mounts.get("v2")
        if v2 and "v2" in own and _has_controller(v2, "memory") and _has_controller(v2, "pids"):
            path = own["v2"]
            parents = [os.path.dirname(path.rstrip("/")), path] if path != "/" else [path]
            for parent in parents:
                base = os.path.join(v2 + parent, name)
                try:
                    _sweep_stale(os.path.dirname(base))
                    os.mkdir(base)
                except OSError:
                    continue
                try:
                    wanted = [c for c in ("memory", "pids", "cpu") if _has_controller(base, c)]
                    if "memory" in wanted and "pids" in wanted:
                        _write(base, "cgroup.subtree_control", " ".join("+" + c for c in wanted))
                        return cls("v2", {"v2": base})
                except OSError:
                    pass
                _rmdir(base)
        if "memory" in mounts and "pids" in mounts:
            bases = {}
            for controller in ("memory", "pids", "cpu"):
                if controller in mounts and controller in own:
                    base = os.path.join(mounts[controller] + own[controller], name)
                    try:
                        _sweep_stale(os.path.dirname(base))
                        os.mkdir(base)
                        bases[controller] = base
                    except OSError:
                        pass
            if "memory" in bases and "pids" in bases:
                return cls("v1", bases)
            for base in bases.values():
                _rmdir(base)
        return None

    def job(self, memory_bytes: int, processes: int, cpus: float, pids: bool = True) -> "JobCgroup | None":
        """A group for one job, its limits set; None if it cannot be made. ``pids``: False skips
        v1's pids hierarchy where the fresh uid's RLIMIT_NPROC counts the job's processes exactly
        already (each v1 hierarchy the worker is moved into costs an RCU grace period)."""
        with self.lock:
            self.count += 1
            name = f"job-{self.count}"
        dirs = {}
        try:
            for key, base in self.bases.items():
                if key == "pids" and not pids:
                    continue
                path = os.path.join(base, name)
                os.mkdir(path)
                dirs[key] = path
            quota = f"{max(1000, int(cpus * 100000))} 100000"
            if self.version == "v2":
                path = dirs["v2"]
                _write(path, "memory.max", str(memory_bytes))
                _write(path, "pids.max", str(processes))
                _try_write(path, "memory.swap.max", "0")
                _try_write(path, "memory.oom.group", "1")  # an OOM kill takes the whole job
                if self.cpu:
                    _write(path, "cpu.max", quota)
            else:
                _write(dirs["memory"], "memory.limit_in_bytes", str(memory_bytes))
                _try_write(dirs["memory"], "memory.memsw.limit_in_bytes", str(memory_bytes))
                if "pids" in dirs:
                    _write(dirs["pids"], "pids.max", str(processes))
                if "cpu" in dirs:
                    _write(dirs["cpu"], "cpu.cfs_period_us", "100000")
                    _write(dirs["cpu"], "cpu.cfs_quota_us", quota.split()[0])
            return JobCgroup(self.version, dirs, cpu=self.cpu if self.version == "v2" else "cpu" in dirs)
        except OSError:
            JobCgroup(self.version, dirs).finish()
            return None

    def close(self) -> None:
        for base in self.bases.values():
            _sweep_stale(base, everything=True)
            _rmdir(base)


class JobCgroup:
    def __init__(self, version: str, dirs: dict[str, str], cpu: bool = False):
        self.version, self.dirs, self.cpu = version, dirs, cpu
        """``cpu``: the job's CPU is capped too (cpu.max, or v1's CFS quota)."""

    def add(self, pid: int) -> bool:
        """Move the process into each of the job's groups (its children follow it there)."""
        try:
            for path in self.dirs.values():
                _write(path, "cgroup.procs", str(pid))
            return True
        except OSError:
            return False

    def finish(self) -> dict:
        """Kill whatever of the job is left, read what it used, remove its groups."""
        usage = {}
        _kill_cgroup(self.version, list(self.dirs.values()))
        if self.version == "v2" and "v2" in self.dirs:
            peak = _read(self.dirs["v2"], "memory.peak")
            cpu = dict(line.split() for line in (_read(self.dirs["v2"], "cpu.stat") or "").splitlines() if " " in line)
            if peak and peak.strip().isdigit():
                usage["memory_peak_bytes"] = int(peak)
            if "usage_usec" in cpu:
                usage["cpu_seconds"] = int(cpu["usage_usec"]) / 1e6
        elif "memory" in self.dirs:
            peak = _read(self.dirs["memory"], "memory.max_usage_in_bytes")
            if peak and peak.strip().isdigit():
                usage["memory_peak_bytes"] = int(peak)
        for path in self.dirs.values():
            _rmdir(path)
        return usage


def _cgroup_mounts() -> dict[str, str]:
    """"v2" -> the cgroup2 mount point; each v1 controller (memory, pids, cpu) -> its mount point."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = fields[4].encode().decode("unicode_escape")
        if tail[0] == "cgroup2":
            found.setdefault("v2", point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in ("memory", "pids", "cpu"):
                    found.setdefault(option, point)
    return found


def _own_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f.read().splitlines():
                hierarchy, controllers, path = line.split(":", 2)
                if hierarchy == "0" and not controllers:
                    own["v2"] = path
                for controller in controllers.split(","):
                    own[controller] = path
    except (OSError, ValueError):
        pass
    return own


def _has_controller(path: str, controller: str, listing: str = "cgroup.controllers") -> bool:
    return controller in (_read(path, listing) or "").split()


def _read(path: str, name: str) -> str | None:
    try:
        with open(os.path.join(path, name)) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, name: str, value: str) -> None:
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


def _try_write(path: str, name: str, value: str) -> None:
    try:
        _write(path, name, value)
    except OSError:
        pass


def _kill_cgroup(version: str, dirs: list[str], timeout: float = 2.0) -> None:
    """Kill every process in the groups and wait until they are gone."""
    if version == "v2":
        for path in dirs:
            _try_write(path, "cgroup.kill", "1")
    deadline = time.monotonic() + timeout
    marker = "/".join(dirs[0].rstrip("/").split("/")[-2:]) + "\n" if dirs else ""
    while True:  # every hierarchy holds the same processes: one list is enough
        pids = {int(p) for path in dirs[:1] for p in (_read(path, "cgroup.procs") or "").split() if p.isdigit()}
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            _kill_member(pid, marker)
        time.sleep(0.002)


def _kill_member(pid: int, marker: str) -> None:
    """SIGKILL ``pid`` if it is still in the job's group: through a pidfd, so that a pid the
    process freed and another took in the meantime is never signalled."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            if any(line.endswith(marker) for line in f.read().splitlines(keepends=True)):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rmdir(path: str, timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


def _sweep_stale(parent: str, everything: bool = False) -> None:
    """Remove the empty groups a crashed harness left behind (its pid is gone), or, with
    ``everything``, every job group under ``parent``."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        if everything and name.startswith("job-"):
            _kill_cgroup("v2" if os.path.exists(os.path.join(path, "cgroup.kill")) else "v1", [path], timeout=0.5)
            _rmdir(path, timeout=0.2)
        elif name.startswith("ratchet-sandbox-") and name.split("-")[2].isdigit():
            pid = int(name.split("-")[2])
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                for child in os.listdir(path) if os.path.isdir(path) else ():
                    if child.startswith("job-"):
                        _rmdir(os.path.join(path, child), timeout=0.1)
                _rmdir(path, timeout=0.1)
