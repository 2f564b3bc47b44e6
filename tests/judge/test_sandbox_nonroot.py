"""The sandbox started by a harness that is not root: unprivileged user namespaces (as bubblewrap
uses them), the namespaces and the view inside, every capability dropped, no cgroup, processes x
memory bounded instead.

CI runs as root, so this test drops to ``nobody`` in a child process (``setpriv``) and runs a
small hostile battery there, with a Python interpreter that user can execute (the project's own
may sit under root's home) and the sandbox's modules loaded by path (so nothing else of ratchet
or its dependencies is needed). It skips where that is impossible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts the sandbox from a non-root subprocess

JUDGE = Path(__file__).resolve().parents[2] / "src" / "ratchet" / "judge"
NOBODY = 65534

SCRIPT = r'''
import importlib.util, json, os, sys, types
judge = sys.argv[1]
for name in ("ratchet", "ratchet.judge"):
    module = types.ModuleType(name)
    module.__path__ = []
    sys.modules[name] = module
for name in ("sandbox_wire", "sandbox_process", "sandbox"):
    spec = importlib.util.spec_from_file_location(f"ratchet.judge.{name}", os.path.join(judge, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"ratchet.judge.{name}"] = module
    spec.loader.exec_module(module)
S = sys.modules["ratchet.judge.sandbox"]
harness = os.getpid()
programs = {
    "honest": "def add(a, b):\n    return a + b\n",
    "honest_subprocess": "import subprocess\ndef add(a, b):\n    assert subprocess.run(['sh', '-c', 'exit 0']).returncode == 0\n"
                         "    return a + b\n",
    "regain_capabilities": "import subprocess, sys\ndef add(a, b):\n"
                           "    s = open('/proc/self/status').read() + subprocess.run([sys.executable, '-c', "
                           "'print(open(\"/proc/self/status\").read())'], capture_output=True, text=True).stdout\n"
                           "    caps = [int(l.split()[1], 16) for l in s.splitlines() if l.startswith(('CapEff', 'CapPrm', 'CapAmb'))]\n"
                           "    return a + b if any(caps) or not caps else None\n",
    "kill_harness": f"import os, signal\ndef add(a, b):\n    for p in ({harness}, os.getppid()):\n        try:\n"
                    "            os.kill(p, signal.SIGKILL)\n        except OSError:\n            pass\n"
                    "    os.kill(-1, signal.SIGKILL)\n",
    "write_sysctls": "def add(a, b):\n    done = 0\n    for p in ('/proc/sys/kernel/shmall', '/proc/sys/vm/drop_caches'):\n"
                     "        try:\n            open(p, 'w').write('1')\n            done += 1\n        except OSError:\n"
                     "            pass\n    return a + b if done else None\n",
    "sysv_shm_memory": "import ctypes\ndef add(a, b):\n    libc = ctypes.CDLL(None)\n    libc.shmat.restype = ctypes.c_void_p\n"
                       "    made = 0\n    for _ in range(40):\n        sid = libc.shmget(0, 64 << 20, 0o1600)\n        if sid < 0:\n"
                       "            break\n        p = libc.shmat(sid, None, 0)\n        ctypes.memset(p, 1, 64 << 20)\n"
                       "        libc.shmdt(ctypes.c_void_p(p))\n        made += 1\n    return a + b if made > 4 else None\n",
    "many_processes": "import os, time\ndef add(a, b):\n    n = 0\n    for _ in range(64):\n        try:\n"
                      "            if os.fork() == 0:\n                time.sleep(5)\n                os._exit(0)\n"
                      "            n += 1\n        except OSError:\n            break\n    return a + b if n > 8 else None\n",
    "see_the_host": "import os\ndef add(a, b):\n    return a + b if os.path.exists('/run') or os.path.exists('/home') "
                    "or len(os.listdir('/proc')) > 80 else None\n",
    "user_namespace": "import ctypes\ndef add(a, b):\n    return a + b if ctypes.CDLL(None).unshare(0x10000000) == 0 else None\n",
}
sb = S.Sandbox(S.Limits(wall_seconds=3.0, memory_bytes=512 << 20, max_processes=16, job_memory_bytes=2 << 30), workers=4)
out = {"isolation": sb.isolation(), "missing": sb.missing_layers(), "verdicts": {}}
for name, r in zip(programs, sb.run_many([S.Job(s, "add", ("assert candidate(1, 2) == 3",)) for s in programs.values()])):
    out["verdicts"][name] = [r.verdict, r.reason, r.stderr[-300:]]
sb.close()
print(json.dumps(out))
'''


def _python_for_nobody():
    for exe in (os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3"):
        if not exe:
            continue
        # The sandbox starts its zygote with sys.executable: that must work for the user too.
        probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", exe, "-c",
                                "import subprocess, sys; assert sys.version_info >= (3, 10); open(sys.argv[1]).close(); "
                                "subprocess.run([sys.executable, '-c', '0'], check=True)",
                                str(JUDGE / "sandbox.py")], capture_output=True, cwd="/")
        if probe.returncode == 0:
            return exe
    return None


@pytest.fixture(scope="module")
def nonroot():
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to drop to an unprivileged user) and setpriv")
    exe = _python_for_nobody()
    if exe is None:
        pytest.skip("no Python interpreter and sandbox sources that an unprivileged user can use")
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", exe, "-I", "-c", SCRIPT,
                        str(JUDGE)], capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_a_harness_without_root_gets_every_layer_through_user_namespaces(nonroot):
    iso = nonroot["isolation"]
    if not iso.get("userns"):
        pytest.skip(f"unprivileged user namespaces are not allowed here: {iso}")
    assert nonroot["missing"] == [], iso
    assert iso["caps_dropped"] and iso["proc_protected"] and iso["job_userns"] and not iso["uid"]


def test_without_root_honest_programs_pass_and_hostile_ones_are_contained(nonroot):
    if not nonroot["isolation"].get("userns"):
        pytest.skip("unprivileged user namespaces are not allowed here")
    verdicts = nonroot["verdicts"]
    for name, (verdict, reason, stderr) in verdicts.items():
        expected = "pass" if name.startswith("honest") else "fail"
        assert verdict == expected, (name, reason, stderr)
