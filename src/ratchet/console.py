"""What the terminal shows and how the process shares the CPU: library noise, threads, loop status.

- ``quiet_libraries``: transformers', datasets' and huggingface_hub's own bars and messages
  ("Loading weights", "Writing model shards") are silenced unless ``--verbose``.
- ``pick_threads``: how many threads torch's OpenMP pool gets. OpenMP threads wait for each other
  at every parallel region; with a core taken by another program, one of two threads runs at half
  speed and the other spins waiting for it, so decoding ran about 8x slower than alone on this
  2-core machine. So the pool is sized to the cores that are idle now (read from ``/proc/stat``
  over a short interval); this must be set before torch is imported, and an ``OMP_NUM_THREADS``
  the user set wins. (Sleeping instead of spinning, ``OMP_WAIT_POLICY=PASSIVE``, was measured and
  not kept: alone, greedy evaluation of 200 problems took 104 s with it against 74 s without.)
- ``LoopStatus``: one status line per stage of the loop (round i/n, stage, elapsed, loop ETA from the
  finished stages, the last round's metric), and "done, skipped" for a stage a resumed run finished.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def quiet_libraries(verbose: bool = False) -> None:
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def idle_cores(interval: float = 0.3, stat: str = "/proc/stat") -> float | None:
    """Cores idle over ``interval`` seconds (idle + iowait share of all CPU time, times the cores), or
    None where ``/proc/stat`` cannot be read."""
    def sample():
        fields = [int(x) for x in Path(stat).read_text().splitlines()[0].split()[1:]]
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (idle1 - idle0) / (total1 - total0) * (os.cpu_count() or 1)


def pick_threads(idle: float | None, cores: int) -> int:
    """Threads for the idle cores: a core counts when at least 60% of it is free."""
    if idle is None:
        return cores
    return max(1, min(cores, int(idle + 0.4)))


def configure_threads() -> str | None:
    """Set the OpenMP pool before torch loads; returns a note when it chose fewer threads than cores."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = pick_threads(idle_cores(), cores)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if threads < cores:
        return f"ratchet: {cores - threads} of {cores} cores are busy with other programs; using {threads} thread(s)"
    return None


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class LoopStatus:
    """Status lines of a loop of ``rounds`` rounds; the loop ETA is the mean time of a finished round
    (over its stages that ran) times the rounds left."""

    def __init__(self, rounds: int, enabled: bool = True):
        from rich.console import Console

        self.rounds, self.enabled = rounds, enabled
        self.console = Console(stderr=True, highlight=False)
        self.start, self.round, self.metric = time.time(), 0, None
        self.round_seconds: list[float] = []
        self.round_start = self.start

    def begin_round(self, r: int) -> None:
        if self.round and r != self.round:
            self.round_seconds.append(time.time() - self.round_start)
        self.round, self.round_start = r, time.time()

    def set_metric(self, name: str, value: float | None) -> None:
        self.metric = None if value is None else f"{name} {value:.3f}"

    def line(self, stage: str, note: str = "") -> str:
        elapsed = time.time() - self.start
        parts = [f"round {self.round}/{self.rounds}", stage, f"elapsed {_minutes(elapsed)}"]
        if self.round_seconds:
            left = sum(self.round_seconds) / len(self.round_seconds) * (self.rounds - self.round + 1) \
                - (time.time() - self.round_start)
            parts.append(f"loop ETA ~{_minutes(max(0.0, left))}")
        if self.metric:
            parts.append(f"last {self.metric}")
        return " | ".join(parts) + (f" - {note}" if note else "")

    def stage(self, stage: str, skipped: bool) -> None:
        if self.enabled:
            self.console.print(f"[bold]ratchet[/bold] {self.line(stage, 'done, skipped' if skipped else '')}")
