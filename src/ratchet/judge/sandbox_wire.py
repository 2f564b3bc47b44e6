"""The protocol between a program's process and its tests' process, and the result channel.

Shared by both sides of ``judge.sandbox`` and loaded by ``sandbox_child`` inside the sandbox,
so it uses the standard library only and imports nothing from ratchet.

The tests never run in the program's process. They call ``candidate(...)`` (also bound to the
entry point's name), a proxy that sends the arguments over a pipe; the program's process calls
the real function and sends back the return value in a tagged encoding of plain data: None,
bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset. Subclasses
are reduced to their base type through the base type's own methods, anything else cannot leave.
The tests' process decodes the bytes into fresh built-in objects, so an object whose ``__eq__``
always answers True, a patched ``builtins`` module, or any other monkey-patching stays in the
program's process and cannot touch the assertions. A program that exits (``sys.exit``,
``os._exit``, a crash) before or during the tests makes the proxy raise ``CandidateDied``, a
BaseException that ``except Exception`` in a test cannot swallow, so the test fails.

The tests' process writes one line per event to the result channel, a pipe the program's
process does not hold: ``I`` isolation flags (first, before any untrusted code runs), then, each
behind a random token the harness sends with the tests, ``L`` program loaded or not, ``S`` setup
error, ``T`` one test's outcome, ``X`` the program's process died, ``D`` done, ``Z`` nothing
left running. The token keeps a model-written test, which runs in that process, from forging
lines blindly; it is not a secret from code that goes looking for it. The harness decides the
verdict from these lines and its own view of time and output.
"""

import builtins
import os
import struct
import sys

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


# ----------------------------------------------------------------------------- program side


def describe(exc: BaseException, with_type: bool = True) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}" if with_type else str(exc)
    except BaseException:  # a program's exception whose __str__ itself fails
        text = type(exc).__name__ if with_type else ""
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
            reply = b"E" + encode((type(e).__name__, describe(e, with_type=False)))
        flush()  # the process may be killed at any time after the last reply
        send_frame(wfd, reply)


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


# ----------------------------------------------------------------------------- test side


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
        """None once the program has loaded, else why it did not."""
        try:
            kind, value = self._receive()
        except CandidateDied:
            return "the program's process exited or broke protocol before the tests ran"
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
    """One event line; fields are escaped so that no message can forge another line or field."""
    escaped = []
    for field in fields:
        text = str(field)
        for raw, esc in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            text = text.replace(raw, esc)
        escaped.append(text[:1000])
    os.write(fd, ("\t".join(escaped) + "\n").encode("utf-8", "replace"))


def run_tests(job: dict, candidate: Candidate, fd: int) -> None:
    """Run ``job["tests"]`` against the candidate, reporting each event under ``job["token"]``."""
    token = job["token"]
    failure = candidate.ready()
    if failure is not None:
        report(fd, token, "L", "error", failure)
        report(fd, token, "D")
        return
    report(fd, token, "L", "ok")
    base = {"__name__": "__test__", "__builtins__": builtins}
    try:
        exec(compile(job["setup"], "<setup>", "exec"), base)
    except BaseException as e:
        report(fd, token, "S", describe(e))
        report(fd, token, "D")
        return
    # Bound after the setup, in the setup's own globals: its helpers that call the entry point
    # reach the program too, not the setup's stub.
    base["candidate"] = base[job["entry_point"]] = candidate
    for i, source in enumerate(job["tests"]):
        try:
            exec(compile(source, f"<test {i}>", "exec"), dict(base))
            outcome = ("pass", "")
        except BaseException as e:
            outcome = ("fail", describe(e))
        if candidate.dead:
            report(fd, token, "T", i, "fail", outcome[1] or "the program's process died")
            report(fd, token, "X", i)
            return
        report(fd, token, "T", i, *outcome)
    report(fd, token, "D")
