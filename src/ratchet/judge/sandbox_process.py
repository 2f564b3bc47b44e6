"""The harness's side of the sandbox's processes: the zygote, and one job's pipes and kill.

``Zygote`` starts ``sandbox_child.py --zygote`` once and asks it for a worker per job;
``run_in_worker`` feeds that worker its job on stdin, drains its stdout, stderr and result pipe
(each capped), waits for it to exit or for the deadline, then kills its process group.
``sweep_uids`` kills what is left under a run's uids when no pid namespace did it already.
Verdicts are not made here (see ``judge.sandbox``).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import threading
import time


class Zygote:
    """The long-lived root-side process that forks one worker per job (see sandbox_child)."""

    def __init__(self, argv: list[str]):
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


def run_in_worker(zygote: Zygote, payload: bytes, deadline: float, cap: int) -> tuple[dict, str]:
    """Run one job: returns the bytes of stdout, stderr and the result channel, and how it ended
    ("exited", "timeout", "output_limit:<stream>", "spawn_failed")."""
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
