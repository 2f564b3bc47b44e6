"""The code that runs inside the sandbox: isolation, privilege drop, the program and its tests.

``judge.sandbox`` starts this file as ``python -I -S sandbox_child.py RESULT_FD``; it is never
imported by ratchet and uses the standard library only (``-I -S``: no site, no user paths, no
environment variables read). It reads a job from stdin in two frames (program first, tests
second), so the program's process never holds the tests in its memory.

Process tree (uids A and B are fresh random uids per run, when the harness runs as root)::

    bootstrap (root)   unshare(net, mount, pid); fork; wait
    └── init (root → uid A, pid 1 of the new pid namespace)
        mounts: every mount read-only, private tmpfs on /tmp, /var/tmp, /dev/shm and the work
        dir, fresh /proc (hidepid=2), hidden paths masked; then runs the TESTS
        └── candidate (uid B)   runs the PROGRAM and serves calls to its entry point

The tests never run in the program's process. They call ``candidate(...)``, a proxy that sends
the arguments over a pipe; the candidate process calls the real function and sends back the
return value in a tagged encoding of primitive types (None, bool, int, float, complex, str,
bytes, bytearray, list, tuple, dict, set, frozenset; subclasses are reduced to their base type
through the base type's own methods). The test process decodes it into fresh built-in objects,
so an object whose ``__eq__`` always answers True, a patched ``builtins`` module, or any other
monkey-patching stays in the candidate's process and cannot touch the assertions. The candidate
cannot signal, trace or read the test process either: another uid, and the test process is not
dumpable. A candidate that exits (``sys.exit``, ``os._exit``) before or during the tests makes the
proxy raise, so the test fails.

Only the init process writes to RESULT_FD (the candidate closes it before any program code
runs), one line per event: ``I`` isolation flags, ``L`` program loaded or not, ``S`` setup error,
``T`` one test's outcome, ``X`` the candidate died, ``D`` done. The harness decides the verdict
from these lines plus its own view of time and output; a missing ``D`` is a failure.
"""

import builtins
import os
import resource
import signal
import struct
import sys

# ----------------------------------------------------------------------------- wire codec

_MAX_DEPTH = 200
_INT_LEN = 4  # bytes of every length prefix


def encode(value) -> bytes:
    """Primitive value -> bytes; TypeError for anything that is not plain data."""
    out = []
    _encode(value, out, 0)
    return b"".join(out)


def _length(n: int) -> bytes:
    return n.to_bytes(_INT_LEN, "little")


def _encode(x, out, depth):
    if depth > _MAX_DEPTH:
        raise TypeError("value nested too deeply to leave the sandbox")
    t = type(x)
    if x is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if x else b"F")
    elif issubclass(t, int):
        n = int.__index__(x)
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        out += [b"i", _length(len(raw)), raw]
    elif issubclass(t, float):
        out += [b"f", struct.pack("<d", float.__float__(x))]
    elif issubclass(t, complex):
        c = complex.__complex__(x)
        out += [b"c", struct.pack("<dd", c.real, c.imag)]
    elif issubclass(t, str):
        raw = str.__str__(x).encode("utf-8", "surrogatepass")
        out += [b"s", _length(len(raw)), raw]
    elif issubclass(t, (bytes, bytearray)):
        raw = bytes(memoryview(x))
        out += [b"a" if issubclass(t, bytearray) else b"b", _length(len(raw)), raw]
    elif issubclass(t, dict):
        items = list(dict.items(x))
        out += [b"d", _length(len(items))]
        for k, v in items:
            _encode(k, out, depth + 1)
            _encode(v, out, depth + 1)
    else:
        for base, tag in ((list, b"l"), (tuple, b"t"), (set, b"S"), (frozenset, b"Z")):
            if issubclass(t, base):
                items = list(base.__iter__(x))
                out += [tag, _length(len(items))]
                for item in items:
                    _encode(item, out, depth + 1)
                return
        raise TypeError(f"a value of type {t.__name__} cannot leave the sandbox (plain data only)")


def decode(data: bytes):
    """bytes -> fresh built-in objects; ValueError on anything malformed."""
    try:
        value, end = _decode(data, 0, 0)
    except (IndexError, UnicodeDecodeError, struct.error, TypeError, RecursionError) as e:
        raise ValueError(f"malformed value from the sandbox: {e}") from None
    if end != len(data):
        raise ValueError("malformed value from the sandbox: trailing bytes")
    return value


_CONTAINERS = {b"l": list, b"t": tuple, b"S": set, b"Z": frozenset}
_SCALARS = {b"N": None, b"T": True, b"F": False}


def _take(data, pos, n):
    if n < 0 or pos + n > len(data):
        raise ValueError("malformed value from the sandbox: truncated")
    return data[pos:pos + n], pos + n


def _decode(data, pos, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("malformed value from the sandbox: nested too deeply")
    tag, pos = _take(data, pos, 1)
    if tag in _SCALARS:
        return _SCALARS[tag], pos
    if tag == b"f":
        raw, pos = _take(data, pos, 8)
        return struct.unpack("<d", raw)[0], pos
    if tag == b"c":
        raw, pos = _take(data, pos, 16)
        return complex(*struct.unpack("<dd", raw)), pos
    raw, pos = _take(data, pos, _INT_LEN)
    n = int.from_bytes(raw, "little")
    if tag in (b"i", b"s", b"b", b"a"):
        raw, pos = _take(data, pos, n)
        if tag == b"i":
            return int.from_bytes(raw, "little", signed=True), pos
        if tag == b"s":
            return raw.decode("utf-8", "surrogatepass"), pos
        return (bytes(raw) if tag == b"b" else bytearray(raw)), pos
    if n > len(data) - pos:  # every item takes at least one byte
        raise ValueError("malformed value from the sandbox: bad length")
    if tag == b"d":
        out = {}
        for _ in range(n):
            k, pos = _decode(data, pos, depth + 1)
            out[k], pos = _decode(data, pos, depth + 1)
        return out, pos
    if tag in _CONTAINERS:
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return _CONTAINERS[tag](items), pos
    raise ValueError(f"malformed value from the sandbox: unknown tag {tag!r}")


def read_frame(fd: int, max_bytes: int) -> bytes:
    """One length-prefixed frame; EOFError when the writer is gone."""
    size = int.from_bytes(_read_exact(fd, 8), "little")
    if size > max_bytes:
        raise ValueError(f"message of {size} bytes exceeds the {max_bytes}-byte limit")
    return _read_exact(fd, size)


def _read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(fd: int, payload: bytes) -> None:
    view = memoryview(len(payload).to_bytes(8, "little") + payload)
    while view:
        view = view[os.write(fd, view):]


# ----------------------------------------------------------------------------- isolation

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_libc = None


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


def setup_mounts(workdir: str, uid, disk_bytes: int, hide) -> dict:
    """Private mount namespace: read-only world, private scratch, hidden paths. Root only."""
    if not _mount("none", "/", None, MS_REC | MS_PRIVATE):  # never propagate to the host
        return {"readonly": False}
    readonly = True
    for point, opts in _mount_points():
        if point == "/proc" or point.startswith("/proc/"):
            continue
        keep = sum(flag for name, flag in _MOUNT_FLAGS.items() if name in opts)
        ok = _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        readonly = readonly and (ok or point != "/")
    size = f"size={disk_bytes}"
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(scratch):
            _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=1777")
    os.makedirs(workdir, exist_ok=True)
    owner = "" if uid is None else f",uid={uid},gid={uid}"
    private_work = _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0700{owner}")
    for path in hide:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    return {"readonly": readonly, "private_tmp": private_work}


def become(limits: dict, uid, dumpable: bool) -> None:
    """Resource limits, then drop to ``uid``; after this the process holds no privilege."""
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


# ----------------------------------------------------------------------------- candidate


def describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return text[:1000]


def serve(program: str, entry_point: str, rfd: int, wfd: int, max_bytes: int) -> None:
    """Run the program, then answer calls to its entry point until the pipe closes."""
    scope = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(program, "<program>", "exec"), scope)
        fn = scope.get(entry_point)
        if not callable(fn):
            raise NameError(f"the program defines no function {entry_point!r}")
    except BaseException as e:
        send_frame(wfd, b"E" + encode(("LoadError", describe(e))))
        return
    send_frame(wfd, b"K")
    while True:
        try:
            frame = read_frame(rfd, max_bytes)
            args, kwargs = decode(frame[1:])
        except (EOFError, ValueError):
            return
        try:
            reply = b"R" + encode(fn(*args, **kwargs))
        except BaseException as e:
            reply = b"E" + encode((type(e).__name__, describe(e)))
        _flush()  # the process may be killed at any time after the last reply
        send_frame(wfd, reply)


# ----------------------------------------------------------------------------- tests


class CandidateDied(BaseException):
    """The program's process is gone (exited, crashed or killed). A BaseException, so a
    test's ``except Exception`` cannot swallow it."""


class CandidateError(Exception):
    """The program raised an exception that is not a built-in one."""


def _as_exception(name, message):
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return CandidateError(f"{name}: {message}")


class Candidate:
    """What the tests call: a proxy for the entry point in the candidate process."""

    def __init__(self, wfd: int, rfd: int, max_bytes: int):
        self.wfd, self.rfd, self.max_bytes, self.dead = wfd, rfd, max_bytes, False

    def _receive(self):
        try:
            frame = read_frame(self.rfd, self.max_bytes)
            return frame[:1], (decode(frame[1:]) if len(frame) > 1 else None)
        except (OSError, EOFError, ValueError) as e:
            self.dead = True
            raise CandidateDied(f"the program's process died or broke protocol ({describe(e)})") from None

    def ready(self):
        kind, value = self._receive()
        if kind == b"K":
            return None
        self.dead = True
        if kind == b"E" and isinstance(value, tuple) and len(value) == 2:
            return str(value[1])
        return "the program's process sent an unexpected message"

    def __call__(self, *args, **kwargs):
        if self.dead:
            raise CandidateDied("the program's process died earlier")
        payload = b"C" + encode((args, kwargs))  # TypeError here is the test's own fault
        try:
            send_frame(self.wfd, payload)
        except OSError:
            self.dead = True
            raise CandidateDied("the program's process died") from None
        kind, value = self._receive()
        if kind == b"R":
            return value
        if kind == b"E" and isinstance(value, tuple) and len(value) == 2:
            raise _as_exception(value[0], str(value[1]))
        self.dead = True
        raise CandidateDied("the program's process sent an unexpected message")


def report(fd: int, *fields) -> None:
    text = "\t".join(str(f) for f in fields)
    for raw, esc in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(raw, esc)
    os.write(fd, (text[:2000] + "\n").encode("utf-8", "replace"))


def run_tests(job: dict, candidate: Candidate, fd: int) -> None:
    failure = candidate.ready()
    if failure is not None:
        report(fd, "L", "error", failure.replace("\t", " "))
        report(fd, "D")
        return
    report(fd, "L", "ok")
    base = {"__name__": "__test__", "__builtins__": builtins}
    try:
        exec(compile(job["setup"], "<setup>", "exec"), base)
    except BaseException as e:
        report(fd, "S", describe(e).replace("\t", " "))
        report(fd, "D")
        return
    for i, source in enumerate(job["tests"]):
        scope = dict(base, candidate=candidate)
        scope[job["entry_point"]] = candidate
        try:
            exec(compile(source, f"<test {i}>", "exec"), scope)
            outcome = ("pass", "")
        except BaseException as e:
            outcome = ("fail", describe(e).replace("\t", " "))
        if candidate.dead:
            report(fd, "T", i, "fail", outcome[1] or "the program's process died")
            report(fd, "X", i)
            return
        report(fd, "T", i, *outcome)
    report(fd, "D")


# ----------------------------------------------------------------------------- entry


def candidate_main(config: dict, pipes, flags: dict) -> None:
    """The program's process: pid 1 of the new pid namespace when there is one."""
    if flags.get("pidns") and flags.get("mountns"):
        # Root still, and inside the new pid namespace: /proc shows only this namespace.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    _devnull_stdin()
    uids = config["uids"]
    become(config["limits"], uids and uids[1], dumpable=True)
    serve(config["program"], config["entry_point"], pipes[0], pipes[1], config["max_message_bytes"])


def run_job(config: dict, result_fd: int, flags: dict) -> None:
    """The test process: mounts, fork the candidate, then run the tests against it."""
    uids, workdir = config["uids"], config["workdir"]
    if flags.get("mountns"):
        flags.update(setup_mounts(workdir, uids and uids[1], config["disk_bytes"], config["hide"]))
    elif uids:
        os.chown(workdir, uids[1], uids[1])
    os.chdir(workdir)
    report(result_fd, "I", *(f"{k}={int(v)}" for k, v in flags.items()), f"uid={int(bool(uids))}")
    to_candidate, from_candidate = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (result_fd, to_candidate[1], from_candidate[0]):
            os.close(fd)
        candidate_main(config, (to_candidate[0], from_candidate[1]), flags)
        _flush()
        os._exit(0)
    os.close(to_candidate[0])
    os.close(from_candidate[1])
    job = decode(read_frame(0, 1 << 30))  # the tests arrive only now, after the fork
    _devnull_stdin()
    become(config["limits"], uids and uids[0], dumpable=False)
    run_tests(job, Candidate(to_candidate[1], from_candidate[0], config["max_message_bytes"]), result_fd)
    _flush()
    # Closing the pipe ends the candidate's serve loop; as pid 1 its exit takes every process of
    # its namespace with it. "Z" tells the harness that nothing is left to sweep.
    os.close(to_candidate[1])
    if _reap(pid, timeout=0.5):
        report(result_fd, "Z")


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


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def worker(fds) -> int:
    """One job, in a fresh child of the zygote: its own session, namespaces, then ``run_job``."""
    os.setsid()
    stdin, out, err, result_fd = fds
    for src, dst in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(src, dst)
        os.close(src)
    config = decode(read_frame(0, 1 << 30))
    flags = {}
    if config["namespaces"]:
        for name, flag in (("netns", CLONE_NEWNET), ("mountns", CLONE_NEWNS), ("pidns", CLONE_NEWPID)):
            flags[name] = _unshare(flag)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote is gone: so is this job
    try:
        run_job(config, result_fd, flags)
    except BaseException as e:
        sys.stderr.write(f"sandbox worker failed: {describe(e)}\n")
        return 70
    return 0


def zygote(sock_fd: int) -> None:
    """Fork one worker per request from the harness; started once, so no interpreter start-up
    per job. Requests: ``J`` with four fds (stdin, stdout, stderr, result) -> reply the worker's
    pid; ``R<pid>`` -> reap that worker (kept as a zombie until then so its pid, which is also its
    process group id, cannot be reused while the harness may still signal it)."""
    import socket

    _c()
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
            sock.close()
            code = 70 if len(fds) != 4 else worker(fds)
            _flush()
            os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())


if __name__ == "__main__":
    if sys.argv[1:2] != ["--zygote"] or len(sys.argv) != 3:
        sys.exit("usage: python -I -S sandbox_child.py --zygote SOCKET_FD (started by ratchet.judge.sandbox)")
    zygote(int(sys.argv[2]))
