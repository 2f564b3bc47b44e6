"""The sandbox's own processes: the zygote, one worker per job, and their isolation.

``judge.sandbox`` starts this file once as ``python -I -S sandbox_child.py --zygote FD``; ratchet
never imports it. It uses the standard library only (``-I -S``: no site, no user paths, no
environment variables read) plus ``sandbox_wire`` next to it, loaded by path.

Process tree per job (uids A and B are fresh random uids per run when the harness is root)::

    zygote (root, long-lived)      builds the minimal filesystem view once and lives in it; forks
    │                              a worker per request, so a job costs no interpreter start-up
    └── worker (root → uid A)      setsid; unshare(mount, pid, net, ipc, uts, cgroup): namespaces
        │                          of its own (the harness moves it into the job's cgroup
        │                          meanwhile); runs the TESTS
        └── candidate (root → B)   pid 1 of the new pid namespace; mounts the job's scratch space
                                   and /proc, then runs the PROGRAM and serves calls to its entry
                                   point (see sandbox_wire)

Modes (the harness asks for one, the zygote reports what it got): ``root`` (the harness is root:
fresh uids, namespaces), ``userns`` (not root: the zygote enters an unprivileged user namespace,
as bubblewrap does, mapping only the harness's own uid (to 0 inside), and every job gets a nested
user namespace of its own with its other namespaces, so RLIMIT_NPROC counts each job's processes
apart; the sandboxed processes drop every capability and see /proc/sys read-only) and ``weak``
(no namespaces at all).

Once, before serving: the zygote leaves the harness's session keyring for a fresh, empty one, and
installs the common seccomp filter (``seccomp_filter``), which every worker and program inherits
and cannot remove.

The view (root and userns modes) is built once by the zygote and pivoted into: a read-only tmpfs
root holding read-only binds of /usr (and the /bin, /lib... links to it), a short list of /etc
files, Python's installation, and the device nodes null, zero, full, random and urandom. Nothing
else of the host exists there: not /run or /var/run (service sockets), not the host's /tmp, /home,
/root, /srv, /mnt, the repository or the harness's working directory (run files: prompts, tests,
answers); ``hide`` covers what lies inside a bound directory. Each job then mounts its own
size-capped tmpfs on /tmp (its work dir) and /dev/shm and a /proc of its pid namespace.

The worker reads the job from stdin in two frames, the program before the fork and the tests
after it, so the program's process never holds the tests in its memory. The tests' process is
outside the program's pid namespace, so it gets a process limit of 1 (root mode) and a seccomp
filter that refuses to fork or to signal any other process: nothing it starts can outlive it.
"""

import os
import resource
import signal
import stat
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

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_THREAD = 0x10000000, 0x20000000, 0x40000000, 0x10000
_JOB_NAMESPACES = (("mountns", CLONE_NEWNS), ("pidns", CLONE_NEWPID), ("netns", CLONE_NEWNET), ("ipcns", CLONE_NEWIPC),
                   ("utsns", CLONE_NEWUTS), ("cgroupns", CLONE_NEWCGROUP))
_JOB_FLAGS = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOATIME, MS_NODIRATIME = 1, 2, 4, 8, 1024, 2048
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 32, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 38, 47
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_PRIVATE_WORKDIR = "/tmp/ratchet-sandbox"  # inside each job's own /tmp tmpfs

# What the view holds besides Python's installation: system directories (or the links to /usr
# that stand for them), the few /etc entries that programs and the dynamic linker read, and the
# harmless device nodes.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("passwd", "group", "nsswitch.conf", "host.conf", "hosts", "localtime", "timezone", "ld.so.cache", "ld.so.conf",
        "ld.so.conf.d", "ssl", "ca-certificates", "pki", "alternatives", "mime.types", "os-release", "lsb-release",
        "debian_version", "locale.alias", "protocols", "services")
_DEVICES = ("null", "zero", "full", "random", "urandom")

# Syscall numbers: (x86_64, aarch64); None where the architecture has no such call.
_ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # index, AUDIT_ARCH_*
_NR = {
    "socket": (41, 198), "socketpair": (53, 199), "clone": (56, 220), "clone3": (435, 435), "fork": (57, None),
    "vfork": (58, None), "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424),
    "pidfd_getfd": (438, 438), "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "kcmp": (312, 272), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "unshare": (272, 97),
    "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "kexec_load": (246, 104),
    "kexec_file_load": (320, 294), "init_module": (175, 105), "finit_module": (313, 273),
    "delete_module": (176, 106), "reboot": (169, 142), "swapon": (167, 224), "swapoff": (168, 225),
    "acct": (163, 89), "syslog": (103, 116), "quotactl": (179, 60), "quotactl_fd": (443, 443),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264), "fanotify_init": (300, 262),
    "lookup_dcookie": (212, 18),
}
# Refused to the zygote and so to every process it forks (installed once, after the zygote built
# its view): the kernel keyring (not namespaced), entering namespaces, tracing and reading other
# processes, io_uring (which can open sockets without socket(2)), bpf, perf, userfaultfd, modules,
# kexec, reboot, swap, accounting, quotas, file handles, and every mount call but mount(2) itself,
# which each job needs for its scratch space and /proc and which needs a privilege the program
# never has. Creating namespaces needs the same privilege, except a user namespace: clone and
# unshare with CLONE_NEWUSER are refused, and clone3 (whose flags a filter cannot read) answers
# ENOSYS so that libc falls back to clone.
_DENIED = ("keyctl", "add_key", "request_key", "setns", "umount2", "pivot_root", "chroot",
           "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace",
           "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "bpf", "perf_event_open", "userfaultfd",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
           "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "syslog", "quotactl",
           "quotactl_fd", "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie")
_SIGNALS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
EPERM, ENOSYS, EAFNOSUPPORT, AF_UNIX = 1, 38, 97, 1

_libc = None
_mode = "weak"  # the zygote's mode: root, userns or weak
_view = False  # the zygote pivoted into the minimal view
_keyring = False  # the zygote joined a fresh, empty session keyring (every job inherits it)
_seccomp = False  # the zygote installed the common seccomp filter (every job inherits it)
_job_userns = False  # user namespace mode: each job gets a nested user namespace of its own
_host_mounts = None  # the host's mount points, read once by the zygote


def _c():
    global _libc
    if _libc is None:
        import ctypes  # imported before any program code runs; the fork children share it

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _arch():
    return _ARCHES.get(os.uname().machine)


def _syscall(name: str, *args) -> int:
    import ctypes

    arch = _arch()
    nr = _NR[name][arch[0]] if arch else None
    if nr is None:
        return -1
    return _c().syscall(ctypes.c_long(nr), *args)


def _unshare(flag: int) -> bool:
    return _c().unshare(flag) == 0


def _mount(source, target, fstype, flags, data=None) -> bool:
    enc = (lambda s: None if s is None else s.encode())
    return _c().mount(enc(source), enc(target), enc(fstype), flags, enc(data)) == 0


def _prctl(option: int, value: int) -> int:
    return _c().prctl(option, value, 0, 0, 0)


def _mount_points():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
            points.append((point, fields[5].split(",")))
    return points


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# ----------------------------------------------------------------------------- the zygote's view


def _enter_userns() -> bool:
    """Not root: an unprivileged user namespace mapping only the harness's own uid and gid (to 0
    inside, so that the job IPC namespaces' limits, owned by the namespace's root, can be set;
    the sandboxed processes still hold no capability, and their /proc/sys is read-only), so the
    zygote may create namespaces and mounts for its jobs. Tried in a child first: a mapping that
    fails would leave the zygote as nobody in a namespace it cannot leave."""
    uid, gid = os.geteuid(), os.getegid()
    pid = os.fork()
    if pid == 0:
        _exit(0 if _userns_here(uid, gid) else 1)
    if os.waitpid(pid, 0)[1] != 0:
        return False
    return _userns_here(uid, gid)


def _userns_here(uid: int, gid: int) -> bool:
    return _unshare(CLONE_NEWUSER) and _map_ids(uid, gid)


def _map_ids(uid: int, gid: int) -> bool:
    """Map ``uid`` and ``gid`` of the parent user namespace to 0 in the one just entered."""
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


def _view_entries(needs, executable):
    """path -> ("dir" | "file" | "dev" | "link", link target): what the view holds."""
    entries = {}

    def add(path, kind=None):
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            entries[path] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            entries[path] = ("dir", None)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode):
            entries[path] = (kind or "file", None)

    for path in _SYSTEM:
        add(path)
    for name in _ETC:
        add("/etc/" + name)
    for name in _DEVICES:
        add("/dev/" + name, "dev")
    for path in needs:
        path = os.path.realpath(path)
        if os.path.isdir(path) and not _bound(entries, path):
            entries[path] = ("dir", None)
    # The interpreter's own path (a venv's bin/python): a link to the real one, so programs can
    # run sys.executable, without exposing the directory around it. Not where the path already
    # leads into the view (through a bound directory or a link such as /bin -> usr/bin).
    through_link = any(kind == "link" and _under(executable or "", p) for p, (kind, _) in entries.items())
    if executable and not _bound(entries, executable) and not through_link and os.path.exists(executable):
        entries[executable] = ("link", os.path.realpath(executable))
    return entries


def _bound(entries, path: str) -> bool:
    return any(kind == "dir" and _under(path, p) for p, (kind, _) in entries.items())


def _readonly(path: str, device: bool = False) -> bool:
    """Make the bind mount at ``path`` (and everything under it) read-only, nosuid, and nodev
    unless it holds device nodes."""
    import ctypes

    attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (MOUNT_ATTR_NOEXEC if device else MOUNT_ATTR_NODEV)
    attr = (ctypes.c_uint64 * 4)(attrs, 0, 0, 0)  # set, clear, propagation, userns
    if _syscall("mount_setattr", AT_FDCWD, path.encode(), AT_RECURSIVE, ctypes.byref(attr), 32) == 0:
        return True
    # Before Linux 5.12: remount, keeping the flags a user namespace may not clear.
    keep = os.statvfs(path).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (MS_NOEXEC if device else MS_NODEV)
    for bit, flag in ((8, MS_NOEXEC), (4, MS_NODEV), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        flags |= flag if keep & bit else 0
    return _mount(None, path, None, flags)


def _cover(path: str, flags: int = 0) -> bool:
    """Put an empty tmpfs over a directory, /dev/null over a file."""
    if os.path.isdir(path):
        return _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | flags, "size=64k,mode=0755")
    return os.path.exists(path) and _mount("/dev/null", path, None, MS_BIND)


_SCRATCH = ("/tmp", "/dev/shm")
_IN_SCRATCH: dict = {}
"""View entries that lie under a scratch directory (Python installed, or a checkout, under /tmp):
each job's own tmpfs covers the scratch directory, so ``_scratch_mount`` binds them back."""


def build_view(spec: dict) -> bool:
    """Pivot the zygote (in a mount namespace of its own) into the minimal view. Every job's
    mount namespace is a copy of it. False, with the zygote left in its private copy of the
    host's mounts, if any step fails."""
    if not _mount("none", "/", None, MS_REC | MS_PRIVATE):
        return False
    entries = _view_entries(spec["needs"], spec.get("executable"))
    _IN_SCRATCH.update({p: e for p, e in entries.items() if any(_under(p, d) for d in _SCRATCH)})
    staging = "/tmp"
    held = {}
    try:
        # Opened before staging covers /tmp: bind sources are reached through these.
        for path, (kind, _) in entries.items():
            if kind != "link":
                held[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        if not _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"):
            return False
        for path in sorted(entries):
            kind, target = entries[path]
            dest = staging + path
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            if kind == "link":
                os.symlink(target, dest)
                continue
            if kind == "dir":
                os.mkdir(dest, 0o755)
            else:
                os.close(os.open(dest, os.O_CREAT | os.O_WRONLY, 0o644))
            bound = _mount(f"/proc/self/fd/{held[path]}", dest, None, MS_BIND | MS_REC)
            if not bound or not _readonly(dest, kind == "dev"):
                raise OSError(f"cannot bind {path} into the sandbox's view")
        for path in ("/tmp", "/dev/shm", "/proc", "/var"):
            os.makedirs(staging + path, mode=0o755, exist_ok=True)
        os.symlink("/tmp", staging + "/var/tmp")
        os.symlink("/proc/self/fd", staging + "/dev/fd")
        for i, name in enumerate(("stdin", "stdout", "stderr")):
            os.symlink(f"/proc/self/fd/{i}", f"{staging}/dev/{name}")
        if spec["mode"] == "userns":
            # An unprivileged user namespace may mount a /proc only where a full one is already
            # visible: the host's stays under each job's own (which covers it).
            if not _mount("/proc", staging + "/proc", None, MS_BIND | MS_REC):
                raise OSError("cannot bind /proc")
        for path in spec["hide"]:
            path = os.path.realpath(path)
            if _bound(entries, path) or entries.get(path, ("",))[0] == "file":
                _cover(staging + path, MS_RDONLY)
        if not _mount(None, staging, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV):
            raise OSError("cannot make the view read-only")
        os.chdir(staging)
        if _syscall("pivot_root", b".", b".") != 0 or _c().umount2(b".", MNT_DETACH) != 0:
            raise OSError("pivot_root failed")
        os.chdir("/")
        return True
    except OSError:
        os.chdir("/")
        _c().umount2(staging.encode(), MNT_DETACH)
        return False
    finally:
        for fd in held.values():
            os.close(fd)


# ----------------------------------------------------------------------------- per-job mounts


def _scratch_mount(scratch: str, options: str) -> bool:
    """A fresh tmpfs on ``scratch``, with the view's entries under it bound back read-only (opened
    before the tmpfs covers them)."""
    keep = {p: e for p, e in _IN_SCRATCH.items() if _under(p, scratch)} if os.path.isdir("/proc/self/fd") else {}
    held = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p, (kind, _) in keep.items() if kind != "link"}
    try:
        if not _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, options):
            return False
        for path in sorted(keep):
            kind, target = keep[path]
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            if kind == "link":
                os.symlink(target, path)
                continue
            if kind == "dir":
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            if not _mount(f"/proc/self/fd/{held[path]}", path, None, MS_BIND | MS_REC) or not _readonly(path):
                raise OSError(f"cannot bind {path} back into the job's {scratch}")
        return True
    finally:
        for fd in held.values():
            os.close(fd)


def _job_mounts(uid, disk_bytes: int, pidns: bool) -> dict:
    """In the job's copy of the view: its own scratch space and /proc (the candidate, pid 1 of the
    job's pid namespace, with privileges still)."""
    size = f"size={disk_bytes}"
    # /proc first: binding the view's entries back under the new /tmp goes through /proc/self/fd
    proc = pidns and _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    tmp = _scratch_mount("/tmp", f"{size},mode=1777")
    shm = _scratch_mount("/dev/shm", f"{size},mode=1777")
    if not proc and not _cover("/proc", MS_RDONLY | MS_NOEXEC):
        raise OSError("cannot cover /proc")
    os.mkdir(_PRIVATE_WORKDIR, 0o700)
    if uid is not None:
        os.chown(_PRIVATE_WORKDIR, uid, uid)
    return {"readonly": True, "private_tmp": tmp and shm, "proc": proc}


def _protect_proc() -> bool:
    """User namespace mode: the sandboxed uid is the namespace's root, without capabilities. Files
    of /proc its uid owns would still be writable: the job's own namespaced sysctls (which would
    undo ``_limit_ipc``) and, for a root harness, every host-wide sysctl and /proc/sysrq-trigger.
    /proc/sys read-only, sysrq-trigger covered."""
    ok = _mount("/proc/sys", "/proc/sys", None, MS_BIND | MS_REC) and _readonly("/proc/sys")
    return (not os.path.exists("/proc/sysrq-trigger") or _cover("/proc/sysrq-trigger")) and ok


def _private_readonly():
    """Every mount private to this namespace (nothing propagates to the host) and read-only.
    None if not even the first part worked."""
    import ctypes

    # mount_setattr(2) (Linux 5.12) does both for the whole tree in one call.
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, MS_PRIVATE, 0)  # set, clear, propagation, userns
    if _syscall("mount_setattr", AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), 32) == 0:
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


def setup_mounts(workdir: str, uid, disk_bytes: int, needs, mask, hide, pidns: bool) -> dict:
    """Fallback when the zygote could not build its view: the host's mounts, read-only, with
    private scratch, masked and hidden paths.

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
    proc = pidns and _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    return {"readonly": readonly, "private_tmp": private_work, "proc": proc}


def _limit_ipc(disk_bytes: int) -> bool:
    """The job's own IPC namespace starts with the kernel's huge defaults: cap System V shared
    memory at the job's disk size and keep message queues and semaphores few."""
    pages = max(1, disk_bytes // os.sysconf("SC_PAGE_SIZE"))
    ok = True
    for key, value in (("kernel/shmmax", disk_bytes), ("kernel/shmall", pages), ("kernel/shmmni", 64),
                       ("kernel/msgmni", 16), ("kernel/sem", "250 8000 32 32"), ("fs/mqueue/queues_max", 16)):
        try:
            fd = os.open(f"/proc/sys/{key}", os.O_WRONLY)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)
        except OSError:
            ok = False
    return ok


# ----------------------------------------------------------------------------- privileges


def _new_session_keyring() -> bool:
    """Leave the session keyring inherited from the harness for a fresh, empty one."""
    import ctypes

    ok = _syscall("keyctl", ctypes.c_long(1), ctypes.c_void_p(None)) >= 0  # KEYCTL_JOIN_SESSION_KEYRING
    return ok or ctypes.get_errno() == ENOSYS  # a kernel without keys has none to leak


def _drop_capabilities() -> bool:
    """User namespace mode: the process keeps the harness's uid, so it gives up every capability
    it holds in the namespace, for good (bounding set, ambient set, then capset)."""
    import ctypes

    for cap in range(64):
        _prctl(PR_CAPBSET_DROP, cap)
    _c().prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    return _c().capset(ctypes.byref(header), ctypes.byref(data)) == 0


def seccomp_filter(kind, own_pid: int = 0):
    """The BPF program. ``"common"`` (the zygote's, inherited by everything): refuse ``_DENIED``,
    sockets other than AF_UNIX, clone and unshare with CLONE_NEWUSER (in user namespace mode but
    the worker's own unshare of a job's namespaces, an exact flag set), clone3. ``"job"`` (user
    namespace mode, stacked by the worker right after that unshare): no unshare at all. ``"tests"``
    (the tests' process where it shares its uid with the harness, stacked): no new process and no
    signal to another process. None on an unknown arch."""
    import struct

    arch = _arch()
    if arch is None:
        return None
    index, audit_arch = arch
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, KILL = 0x7FFF0000, 0x80000000
    deny, allow = (RET, 0, 0, 0x00050000 | EPERM), (RET, 0, 0, ALLOW)
    arg0 = (LD, 0, 0, 16)  # low 32 bits of args[0] (little-endian)
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, audit_arch), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
    if index == 0:  # x32 system calls on x86_64
        prog += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, 0x00050000 | ENOSYS)]

    def block(name, body):
        nr = _NR[name][index]
        if nr is not None:
            prog.append((JEQ, 0, len(body), nr))
            prog.extend(body)

    if kind == "tests":
        block("clone", [arg0, (JSET, 1, 0, CLONE_THREAD), deny, allow])
        for name in ("fork", "vfork", "pidfd_send_signal"):
            block(name, [deny])
        for name in _SIGNALS:
            block(name, [arg0, (JEQ, 0, 1, own_pid & 0xFFFFFFFF), allow, deny])
    elif kind == "job":
        block("unshare", [deny])
    else:
        for name in _DENIED:
            block(name, [deny])
        block("clone3", [(RET, 0, 0, 0x00050000 | ENOSYS)])
        block("clone", [arg0, (JSET, 0, 1, CLONE_NEWUSER), deny, allow])
        job = [(JEQ, 2, 0, _JOB_FLAGS | CLONE_NEWUSER)] if kind == "common_userns" else []
        block("unshare", [arg0, *job, (JSET, 0, 1, CLONE_NEWUSER), deny, allow])
        for name in ("socket", "socketpair"):
            block(name, [arg0, (JEQ, 0, 1, AF_UNIX), allow, (RET, 0, 0, 0x00050000 | EAFNOSUPPORT)])
    prog.append(allow)
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


_PID_PLACEHOLDER = 0x7FFFFFF3  # in the tests' filter, replaced by the process's pid
_FILTERS = {}  # built once in the zygote: kind -> program


def _install_seccomp(kind: str) -> bool:
    import ctypes

    if kind not in _FILTERS:
        _FILTERS[kind] = seccomp_filter(kind, _PID_PLACEHOLDER)
    program = _FILTERS[kind]
    if program is None:
        return False
    if kind == "tests":
        program = program.replace(_PID_PLACEHOLDER.to_bytes(4, "little"), os.getpid().to_bytes(4, "little"))
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = (ctypes.c_uint64 * 2)(len(program) // 8, ctypes.addressof(buf))  # struct sock_fprog, 64-bit
    return _c().prctl(PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0) == 0  # SECCOMP_MODE_FILTER


def _setrlimit(res: int, soft: int, hard: int) -> None:
    """Limits are only ever lowered: raising a hard limit needs CAP_SYS_RESOURCE, which even root
    may lack (and a user namespace never has where it counts)."""
    current = resource.getrlimit(res)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(res, (soft, hard))


def become(limits: dict, uid, dumpable: bool, nproc=None, tests_process: bool = False) -> dict:
    """Resource limits, then drop to ``uid`` (root mode) or every capability (user namespace
    mode); no_new_privs; the socket audit hook; for the tests' process where it has no uid of its
    own, the "tests" seccomp filter (the common one and the zygote's empty session keyring are
    inherited). After this the process holds no privilege. Returns which of these took effect."""
    limits = dict(limits, nproc=nproc or limits["nproc"])
    cpu = limits["cpu_seconds"]
    _setrlimit(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU, then SIGKILL
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "file_size_bytes"),
                      ("RLIMIT_NOFILE", "max_open_files"), ("RLIMIT_NPROC", "nproc")):
        _setrlimit(getattr(resource, name), limits[key], limits[key])
    _setrlimit(resource.RLIMIT_CORE, 0, 0)
    _setrlimit(resource.RLIMIT_MSGQUEUE, 1 << 20, 1 << 20)  # POSIX message queues, bytes per uid
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    flags = {}
    if _mode == "userns":
        flags["caps_dropped"] = _drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount) cannot raise privileges
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it, so set it again
    _prctl(PR_SET_DUMPABLE, int(dumpable))
    sys.addaudithook(_deny_network)
    if tests_process and uid is None:
        # The tests' process is outside the program's pid namespace: where it has the harness's
        # uid, nothing but this filter stops it from forking or signalling the harness.
        flags["tests_filter"] = _install_seccomp("tests")
    return flags


def _deny_network(event, args):
    # Audit hooks cannot be removed, and every socket creation, connect, bind and name lookup
    # raises a "socket.*" event, even through _socket directly. Programs that exec a new
    # interpreter or call libc through ctypes escape the hook; the network namespace and the
    # seccomp filter are what stop those.
    if event.startswith("socket."):
        raise PermissionError("network access is disabled in the sandbox")


def _devnull_stdin():
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


# ----------------------------------------------------------------------------- jobs


def _workdir(config: dict, flags: dict) -> str:
    return _PRIVATE_WORKDIR if flags.get("mountns") else config["workdir"]


def candidate_main(config: dict, pipes, flags: dict, sync_w: int) -> None:
    """The program's process: pid 1 of the new pid namespace when there is one. It sets up the
    job's mounts (a /proc for its pid namespace can only be mounted from inside it), drops every
    privilege, tells the tests' process what took effect, and only then runs the program."""
    uids = config["uids"]
    owner = uids and uids[1]
    workdir = _workdir(config, flags)
    setup = {}
    if flags.get("mountns"):
        if _view:
            setup = _job_mounts(owner, config["disk_bytes"], flags.get("pidns", False))
        else:
            setup = setup_mounts(workdir, owner, config["disk_bytes"], config["needs"], config["mask"],
                                 config["hide"], flags.get("pidns", False))
    elif owner is not None:
        os.chown(workdir, owner, owner)
    if flags.get("ipcns") and not config.get("cgroup"):
        # With a memory cgroup, shared memory, messages and semaphores are charged to the job's.
        setup["ipc_limits"] = _limit_ipc(config["disk_bytes"])
    if setup.get("proc") and owner is None and os.geteuid() == 0:
        setup["proc_protected"] = _protect_proc()
    os.chdir(workdir)
    _devnull_stdin()
    if flags.get("pidns"):
        # A group of its own, so kill(0) cannot reach the tests' process; its namespace, not the
        # harness's killpg, takes every process of the program with it.
        os.setsid()
    setup.update(become(config["limits"], owner, dumpable=True))
    os.write(sync_w, wire.encode(setup))
    os.close(sync_w)  # nothing the program does can reach the tests' process through this
    wire.serve(config["program"], config["entry_point"], pipes[0], pipes[1], config["max_message_bytes"])


def _read_setup(fd: int):
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    try:
        setup = wire.decode(b"".join(chunks))
    except ValueError:
        return None
    return setup if isinstance(setup, dict) else None


def run_job(config: dict, result_fd: int, flags: dict) -> None:
    """The test process: fork the candidate, wait until its sandbox is set up, then run the tests
    against it."""
    uids = config["uids"]
    if not flags.get("mountns") and uids and any(closed_ancestor(p) for p in config["needs"]):
        uids = config["uids"] = None  # another uid could not even read Python's standard library
    workdir = _workdir(config, flags)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    sync_r, sync_w = os.pipe()
    to_candidate, from_candidate = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (result_fd, to_candidate[1], from_candidate[0], sync_r):
            os.close(fd)
        try:
            candidate_main(config, (to_candidate[0], from_candidate[1]), flags, sync_w)
            wire.flush()
        except BaseException as e:
            sys.stderr.write(f"sandbox candidate stopped: {wire.describe(e)}\n")
            wire.flush()
        finally:
            _exit(0)
    for fd in (to_candidate[0], from_candidate[1], sync_w):
        os.close(fd)
    setup = _read_setup(sync_r)
    if setup is None:
        raise RuntimeError("the program's process died while its sandbox was being set up")
    flags.update(setup)
    os.chdir(workdir)
    wire.report(result_fd, "I", *(f"{k}={int(v)}" for k, v in flags.items()), f"uid={int(bool(uids))}")
    job = wire.decode(wire.read_frame(0, 1 << 30))  # the tests arrive only now, after the fork
    _devnull_stdin()
    # The tests never need a second process; with a fresh uid, a process limit of 1 (and in any
    # mode the seccomp filter) means nothing they start can outlive them: they are outside the
    # program's pid namespace.
    mine = become(config["limits"], uids and uids[0], dumpable=False, nproc=1 if uids else None, tests_process=True)
    if _seccomp and mine.get("tests_filter") is False:
        raise RuntimeError("the tests' process could not install its seccomp filter")
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


def _unshare_job() -> dict:
    if _mode == "userns" and _job_userns:
        # A user namespace of the job's own as well: RLIMIT_NPROC counts processes per user
        # namespace and uid (Linux 5.14), so jobs that share the harness's uid do not share one
        # process budget. Then no further unshare for anything in the job.
        if not _unshare(_JOB_FLAGS | CLONE_NEWUSER) or not _map_ids(0, 0):
            raise OSError("cannot enter the job's user namespace")
        flags = {name: True for name, _ in _JOB_NAMESPACES}
        flags["job_userns"] = _install_seccomp("job")
        return flags
    if _unshare(_JOB_FLAGS):
        return {name: True for name, _ in _JOB_NAMESPACES}
    return {name: _unshare(flag) for name, flag in _JOB_NAMESPACES}  # an older kernel: what it has


def _nested_userns_works() -> bool:
    pid = os.fork()
    if pid == 0:
        _exit(0 if _unshare(_JOB_FLAGS | CLONE_NEWUSER) and _map_ids(0, 0) else 1)
    return os.waitpid(pid, 0)[1] == 0


def worker(fds) -> int:
    """One job, in a fresh child of the zygote: its own session and namespaces, then ``run_job``.
    Meanwhile the harness moves it into the job's cgroup, and sends the job only once it has:
    nothing is forked before the job arrives, so every process of the job is in the cgroup."""
    stdin, out, err, result_fd = fds
    os.setsid()
    for src, dst in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(src, dst)
        os.close(src)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote is gone: so is this job
    flags = {"userns": _mode == "userns", "view": _view, "keyring": _keyring, "seccomp": _seccomp}
    try:
        if _mode != "weak":
            flags.update(_unshare_job())
        config = wire.decode(wire.read_frame(0, 1 << 30))
        run_job(config, result_fd, flags)
    except BaseException as e:
        sys.stderr.write(f"sandbox worker failed: {wire.describe(e)}\n")
        return 70
    return 0


def zygote(sock_fd: int) -> None:
    """Fork one worker per request from the harness; started once, so no interpreter start-up
    per job. First message: the view's spec (mode, Python's paths, paths to hide); reply: the
    mode, view, keyring and seccomp it got. Requests: ``J`` with four fds (stdin, stdout, stderr,
    result) -> reply the worker's pid; ``R<pid>`` -> reap that worker (kept as a zombie until then
    so its pid, which is also its process group id, cannot be reused while the harness may still
    signal it)."""
    global _mode, _view, _host_mounts, _keyring, _seccomp, _job_userns
    import gc
    import socket

    _c()
    sock = socket.socket(fileno=sock_fd)
    spec = wire.decode(sock.recv(1 << 20))
    _mode = spec["mode"]
    if _mode == "userns" and not _enter_userns():
        _mode = "weak"
    _host_mounts = _mount_points()
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if _mode != "weak":
        if _unshare(CLONE_NEWNS):
            _view = build_view(spec)
        else:
            _mode = "weak"  # namespaces refused (a container without CAP_SYS_ADMIN)
    for kind in ("tests", "job"):
        _FILTERS[kind] = seccomp_filter(kind, _PID_PLACEHOLDER)
    _job_userns = _mode == "userns" and _nested_userns_works()
    # Once for all jobs: a session keyring of the zygote's own, empty, in place of the harness's
    # (no job can add to it: the filter refuses every keyring call), then the common filter.
    _keyring = _new_session_keyring()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _seccomp = _install_seccomp("common_userns" if _job_userns else "common")
    gc.freeze()  # objects alive now are never scanned again, so forks do not copy their pages
    sock.send(wire.encode({"mode": _mode, "view": _view, "keyring": _keyring, "seccomp": _seccomp,
                           "job_userns": _job_userns}))
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
