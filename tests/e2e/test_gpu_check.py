"""benchmarks/gpu_check.py runs end to end on CPU with --quick: the round is ok and the last line
has the documented format (the figures themselves are only meaningful on a GPU)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole round of the benchmark script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
LAST_LINE = re.compile(r"gpu_check: round_ok=(true|false) gen_speedup=(\d+\.\d\d|nan) train_mfu=(\d+\.\d\d|nan)")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run(capsys):
    rc = _load().main(["--device", "cpu", "--dtype", "float32", "--quick"])
    lines = capsys.readouterr().out.strip().splitlines()
    m = LAST_LINE.fullmatch(lines[-1])
    assert m, lines[-20:]
    assert m.group(1) == "true", lines
    assert m.group(2) != "nan" and float(m.group(2)) > 0
    assert m.group(3) == "nan"  # no CPU peak given
    assert rc == 0


def test_quick_cpu_mfu_with_peak(capsys):
    rc = _load().main(["--device", "cpu", "--dtype", "float32", "--quick", "--parts", "mfu", "--peak-tflops", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = LAST_LINE.fullmatch(last)
    assert m and m.group(3) != "nan", last
    assert m.group(1) == "false"  # the round did not run
    assert rc == 1
