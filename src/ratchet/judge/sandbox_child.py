"""The sandbox's own processes: the zygote, one worker per job, and their isolation.

``judge.sandbox`` starts this file once as ``python -I -S sandbox_child.py --zygote FD``; ratchet
never imports it. It uses the standard library only (``-I -S``: no site, no user paths, no
environment variables read) plus ``sandbox_wire`` next to it, loaded by path.

Process tree per job (uids A and B are fresh random uids per run when the harness is root)::

    zygote (root, long-lived)      one empty network namespace for all jobs; forks a worker per
    │                              request, so a job costs no interpreter start-up
    └── worker (root → uid A)      setsid; unshare(mount, pid); mounts; runs the TESTS
        └── candidate (root → B)   pid 1 of the new pid namespace; runs the PROGRAM and serves
                                   calls to its entry point (see sandbox_wire)

The worker reads the job from stdin in two frames, the program before the fork and the tests
after it, so the program's process never holds the tests in its memory. Mounts (root only):
every mount read-only, a private size-capped tmpfs on the work dir, /tmp, /var/tmp and /dev/shm,
the harness user's home masked with only Python's installation bound back, hidden paths covered.
The candidate mounts a fresh /proc for its pid namespace; when it exits or is killed, the kernel
kills every process left in that namespace. The tests' process is outside that namespace, so it
gets a process limit of 1: nothing it starts can outlive it.
"""

import os
import resource
import signal
import sys

# Bound now: a program that replaces os._exit must not turn its process's exit into a fall-through
# into the code after the fork.
_exit = os._exit
_WIRE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_wire.py")


def _load_wire():
    # By path, not through sys.path: the judge directory on sys.path would let a program's
    # ``import math`` find ratchet/judge/math.py.
    import importlib.util

    spec = importlib.util.spec_from_file_location("sandbox_wire", _WIRE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire = _load_wire()
# Imported once here, inherited by every fork: importing typing alone costs a job ~8 ms of CPU,
# and most programs and tests import some of these.
_PRELOAD = ("select", "typing", "math", "re", "collections", "itertools", "functools", "string", "random", "hashlib",
            "heapq", "bisect", "copy", "fractions", "statistics", "datetime", "decimal", "operator")

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1  # x86_64 and arm64
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_libc = None
_shared_netns = False  # set by the zygote: every job runs in its one empty network namespace
_host_mounts = None  # the host's mount points, read once by the zygote


def _c():
    global _libc
    if _libc is None:
        import ctypes  # imported before any program code runs; the fork children share it

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _unshare(flag: int) -> bool:
    return _c().unshare(flag) == 0


def _mount(source, target, fstype, flags, data=None) -> bool:
    enc = (lambda s: None if s is None else s.encode())
    return _c().mount(enc(source), enc(target), enc(fstype), flags, enc(data)) == 0


def _prctl(option: int, value: int) -> None:
    _c().prctl(option, value, 0, 0, 0)


def _mount_points():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
            points.append((point, fields[5].split(",")))
    return points


def _private_readonly():
    """Every mount private to this namespace (nothing propagates to the host) and read-only.
    None if not even the first part worked."""
    import ctypes

    # mount_setattr(2) (Linux 5.12) does both for the whole tree in one call.
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, MS_PRIVATE, 0)  # set, clear, propagation, userns
    if _c().syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), 32) == 0:
        return True
    if not _mount("none", "/", None, MS_REC | MS_PRIVATE):
        return None
    readonly = True
    for point, opts in _host_mounts or _mount_points():
        if point == "/proc" or point.startswith("/proc/"):
            continue
        keep = sum(flag for name, flag in _MOUNT_FLAGS.items() if name in opts)
        ok = _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        readonly = readonly and (ok or point != "/")
    return readonly


def closed_ancestor(path: str):
    """The first directory on the way to ``path`` that other users cannot enter, or None."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if not mode & 0o001:  # no search permission for "other"
            return current
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _cover(path: str, flags: int = 0) -> bool:
    """Put an empty tmpfs over a directory, /dev/null over a file."""
    if os.path.isdir(path):
        return _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | flags, "size=64k,mode=0755")
    return os.path.exists(path) and _mount("/dev/null", path, None, MS_BIND)


def setup_mounts(workdir: str, uid, disk_bytes: int, needs, mask, hide) -> dict:
    """Private mount namespace: read-only world, private scratch, masked and hidden paths.

    ``mask`` (the harness user's home, and any closed directory on the way to Python) gets an
    empty tmpfs, with the paths in ``needs`` that lie under it (Python's installation) bound back
    read-only; ``hide`` is covered last and nothing is bound back. Root only."""
    readonly = _private_readonly()
    if readonly is None:
        return {"readonly": False}
    mask = sorted(set(mask) | {a for a in map(closed_ancestor, needs) if a}, key=len)
    expose = [p for p in needs if any(_under(p, m) for m in mask)]
    held = [os.open(p, os.O_PATH) for p in expose]  # reachable after the mask covers them
    covered = [m for m in mask if _cover(m)]
    for path, fd in zip(expose, held):
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(fd)
    size = f"size={disk_bytes}"
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(scratch):
            _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=1777")
    os.makedirs(workdir, exist_ok=True)
    owner = "" if uid is None else f",uid={uid},gid={uid}"
    private_work = _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0700{owner}")
    for path in covered:
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in hide:
        _cover(path, MS_RDONLY)
    return {"readonly": readonly, "private_tmp": private_work}


def become(limits: dict, uid, dumpable: bool, nproc=None) -> None:
    """Resource limits, then drop to ``uid``; after this the process holds no privilege."""
    limits = dict(limits, nproc=nproc or limits["nproc"])
    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "file_size_bytes"),
                      ("RLIMIT_NOFILE", "max_open_files"), ("RLIMIT_NPROC", "nproc")):
        resource.setrlimit(getattr(resource, name), (limits[key], limits[key]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount) cannot raise privileges
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it, so set it again
    _prctl(PR_SET_DUMPABLE, int(dumpable))
    sys.addaudithook(_deny_network)


def _deny_network(event, args):
    # Audit hooks cannot be removed, and every socket creation, connect, bind and name lookup
    # raises a "socket.*" event, even through _socket directly. Programs that exec a new
    # interpreter escape the hook; the network namespace is what stops those.
    if event.startswith("socket."):
        raise PermissionError("network access is disabled in the sandbox")


def _devnull_stdin():
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


# ----------------------------------------------------------------------------- jobs


def candidate_main(config: dict, pipes, flags: dict) -> None:
    """The program's process: pid 1 of the new pid namespace when there is one."""
    if flags.get("pidns") and flags.get("mountns"):
        # Root still, and inside the new pid namespace: /proc shows only this namespace.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    _devnull_stdin()
    uids = config["uids"]
    become(config["limits"], uids and uids[1], dumpable=True)
    wire.serve(config["program"], config["entry_point"], pipes[0], pipes[1], config["max_message_bytes"])


def run_job(config: dict, result_fd: int, flags: dict) -> None:
    """The test process: mounts, fork the candidate, then run the tests against it."""
    uids, workdir = config["uids"], config["workdir"]
    if flags.get("mountns"):
        flags.update(setup_mounts(workdir, uids and uids[1], config["disk_bytes"], config["needs"],
                                  config["mask"], config["hide"]))
    elif uids and any(closed_ancestor(p) for p in config["needs"]):
        uids = config["uids"] = None  # another uid could not even read Python's standard library
    elif uids:
        os.chown(workdir, uids[1], uids[1])
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    wire.report(result_fd, "I", *(f"{k}={int(v)}" for k, v in flags.items()), f"uid={int(bool(uids))}")
    to_candidate, from_candidate = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (result_fd, to_candidate[1], from_candidate[0]):
            os.close(fd)
        try:
            candidate_main(config, (to_candidate[0], from_candidate[1]), flags)
            wire.flush()
        finally:
            _exit(0)
    os.close(to_candidate[0])
    os.close(from_candidate[1])
    job = wire.decode(wire.read_frame(0, 1 << 30))  # the tests arrive only now, after the fork
    _devnull_stdin()
    # The tests never need a second process or thread; with a fresh uid, a process limit of 1
    # means nothing they start can outlive them (they are outside the program's pid namespace).
    become(config["limits"], uids and uids[0], dumpable=False, nproc=1 if uids else None)
    wire.run_tests(job, wire.Candidate(to_candidate[1], from_candidate[0], config["max_message_bytes"]), result_fd)
    wire.flush()
    # Closing the pipe ends the candidate's serve loop; as pid 1 its exit takes every process of
    # its namespace with it. "Z" tells the harness that nothing is left to sweep.
    os.close(to_candidate[1])
    if _reap(pid, timeout=0.5):
        wire.report(result_fd, job["token"], "Z")


def _reap(pid: int, timeout: float) -> bool:
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        if select.select([fd], [], [], timeout)[0]:
            os.waitpid(pid, 0)
            return True
        return False
    finally:
        os.close(fd)


def worker(fds) -> int:
    """One job, in a fresh child of the zygote: its own session, namespaces, then ``run_job``."""
    os.setsid()
    stdin, out, err, result_fd = fds
    for src, dst in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(src, dst)
        os.close(src)
    config = wire.decode(wire.read_frame(0, 1 << 30))
    flags = {}
    if config["namespaces"]:
        flags["netns"] = _shared_netns
        for name, flag in (("mountns", CLONE_NEWNS), ("pidns", CLONE_NEWPID)):
            flags[name] = _unshare(flag)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote is gone: so is this job
    try:
        run_job(config, result_fd, flags)
    except BaseException as e:
        sys.stderr.write(f"sandbox worker failed: {wire.describe(e)}\n")
        return 70
    return 0


def zygote(sock_fd: int) -> None:
    """Fork one worker per request from the harness; started once, so no interpreter start-up
    per job. Requests: ``J`` with four fds (stdin, stdout, stderr, result) -> reply the worker's
    pid; ``R<pid>`` -> reap that worker (kept as a zombie until then so its pid, which is also its
    process group id, cannot be reused while the harness may still signal it)."""
    global _shared_netns, _host_mounts
    import gc
    import socket

    _c()
    # One empty network namespace for all jobs: creating and destroying one per job costs about
    # a millisecond of CPU each way. Its only interface is a loopback that is down, and bringing
    # it up needs a capability no job has. The socketpair to the harness is unaffected.
    _shared_netns = os.geteuid() == 0 and _unshare(CLONE_NEWNET)
    _host_mounts = _mount_points()
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # objects alive now are never scanned again, so forks do not copy their pages
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 64, 4)
        except OSError:
            return
        if not msg:
            return  # the harness closed its end (or exited)
        if msg[:1] == b"R":
            try:
                os.waitpid(int(msg[1:]), 0)
            except (ChildProcessError, ValueError):
                pass
            continue
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                sock.close()
                code = 70 if len(fds) != 4 else worker(fds)
                wire.flush()
            finally:
                _exit(code)
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())


if __name__ == "__main__":
    if sys.argv[1:2] != ["--zygote"] or len(sys.argv) != 3:
        sys.exit("usage: python -I -S sandbox_child.py --zygote SOCKET_FD (started by ratchet.judge.sandbox)")
    zygote(int(sys.argv[2]))
