"""Benchmark: sampling throughput with ``executor: ray`` (1 and 2 Ray workers) against the local sampler.

SmolLM2-135M-Instruct on CPU, arithmetic prompts, k samples each (the prompts, sampling and stop
strings of ``benchmarks/generate_vs_hf.py``). Three ways to sample the same prompts with the same
seed, every one at one torch thread per process:

- ``local``: ``CachedSampler`` in this process (what ``executor: local`` runs);
- ``ray1`` / ``ray2``: ``loop.executor.RaySampler`` over 1 or 2 Ray actors (``ray_worker.Replica``),
  each sampling a contiguous shard of the prompts with the stage's own per-sample seeds;
- ``procs2``: the same shards in 2 plain processes (``multiprocessing``, no Ray): what the machine
  allows 2 workers, so the gap between it and ``ray2`` is Ray's.

The four run side by side in each repetition, in a rotating order, because the CPU is shared and
its speed drifts; throughput is kept tokens per second (after cutting at a stop string or EOS), and
the speedup is the median over repetitions of ray2's throughput over local's. The actors load the
model and sample once before the first repetition, so no timing includes a model load or a process
start. The local Ray cluster is started here with workers + 1 logical CPUs, so the 1-worker and
the 2-worker actors exist together (only one of them works at a time).

    python benchmarks/ray_scaling.py [--reps 3] [--prompts 128] [--k 8] [--max-new-tokens 96]

128 prompts by default: a round's generate stage in the demo recipe (``task.train_prompts: 128``,
k=8), about 14 minutes a repetition on 2 cores, long enough to average the drift of a shared host's
speed; 32-prompt repetitions (a minute a way) ranged from 1.42 to 2.06 in one run
(docs/scaling.md, "Measured here").

A speedup near 2 needs two idle cores: on a machine where another job holds a core, ray2 gets one.

Last line: ``ray_scaling: workers=2 speedup=<x> identical=<true|false>`` (identical: ray2's
completions equal local's in every repetition: text, finish reason, token count).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics

import torch

from generate_vs_hf import STOP, run, sampling_arguments  # benchmarks/ is the script's directory, on sys.path
from ratchet.config import ExecutorConfig
from ratchet.data import arithmetic
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.loop.executor import RayExecutor, split
from ratchet.models import load_model


def _fields(out: list) -> list:
    return [[dataclasses.asdict(s) for s in per_prompt] for per_prompt in out]


def _plain_worker(conn, model: str, batch_size: int) -> None:
    """A process without Ray: a ``CachedSampler`` sampling each (prompts, params, offset) it receives."""
    torch.set_num_threads(1)
    loaded, tokenizer = load_model(model)
    sampler = CachedSampler(loaded, tokenizer, batch_size=batch_size, progress=False)
    conn.send(None)
    while (job := conn.recv()) is not None:
        conn.send(sampler.sample(*job))


class PlainSampler:
    """``sample`` over contiguous shards in plain processes, like ``RaySampler`` over actors."""

    def __init__(self, workers: int, model: str, batch_size: int):
        spawn = multiprocessing.get_context("spawn")
        self.conns, self.processes = [], []
        for _ in range(workers):
            conn, child = spawn.Pipe()
            self.processes.append(spawn.Process(target=_plain_worker, args=(child, model, batch_size), daemon=True))
            self.processes[-1].start()
            self.conns.append(conn)
        for conn in self.conns:
            conn.recv()  # loaded

    def sample(self, prompts, params) -> list:
        shards = split(len(prompts), len(self.conns))
        for conn, (lo, hi) in zip(self.conns, shards):
            conn.send((prompts[lo:hi], params, lo))
        return [samples for conn in self.conns for samples in conn.recv()]

    def close(self) -> None:
        for conn, process in zip(self.conns, self.processes):
            conn.send(None)
            process.join()


def main() -> None:
    ap = sampling_arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="the larger Ray pool (the smaller has 1)")
    ap.set_defaults(prompts=128)  # a round's generate stage (the module docstring)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the Ray workers' processes inherit it
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=args.workers + 1, include_dashboard=False, logging_level="ERROR")
    model, tokenizer = load_model(args.model)
    prompts = [p["messages"] for p in arithmetic.make_problems(args.prompts, split="train", seed=0)]
    samplers = {"local": CachedSampler(model, tokenizer, batch_size=args.batch_size, progress=False)}
    executors = {}
    for n in (1, args.workers):
        executors[n] = RayExecutor(ExecutorConfig(name="ray", workers=n), {})
        samplers[f"ray{n}"] = executors[n].model(None, args.model)[0].sampler(batch_size=args.batch_size,
                                                                               progress=False)
        samplers[f"ray{n}"].sample(prompts[:n], SamplingParams(k=1, max_new_tokens=2))  # load the model, warm up
    samplers[f"procs{args.workers}"] = plain = PlainSampler(args.workers, args.model, args.batch_size)
    plain.sample(prompts[:args.workers], SamplingParams(k=1, max_new_tokens=2))
    print(f"model={args.model} prompts={args.prompts} k={args.k} temperature={args.temperature} "
          f"max_new_tokens={args.max_new_tokens} stop={STOP!r} batch_size={args.batch_size} threads=1 per process "
          f"cores={os.cpu_count()}", flush=True)

    names, speedups, ray1_ratios, plain_ratios, identical = list(samplers), [], [], [], True
    for rep in range(args.reps):
        params = SamplingParams(k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                stop=STOP, seed=rep)
        order = names[rep % len(names):] + names[:rep % len(names)]
        result = {name: run(samplers[name], prompts, params) for name in order}
        tps = {name: tokens / seconds for name, (seconds, tokens, _) in result.items()}
        speedups.append(tps[f"ray{args.workers}"] / tps["local"])
        ray1_ratios.append(tps["ray1"] / tps["local"])
        plain_ratios.append(tps[f"procs{args.workers}"] / tps["local"])
        same = _fields(result[f"ray{args.workers}"][2]) == _fields(result["local"][2])
        identical = identical and same
        print(f"rep {rep + 1} (order {', '.join(order)}): "
              + " | ".join(f"{name} {result[name][0]:.1f} s, {result[name][1]} tokens, {tps[name]:.1f} tok/s"
                           for name in names)
              + f" | ray{args.workers}/local {speedups[-1]:.2f}, ray1/local {ray1_ratios[-1]:.2f}, "
                f"procs{args.workers}/local {plain_ratios[-1]:.2f}, identical {same}",
              flush=True)
    for executor in executors.values():
        executor.close()
    ray.shutdown()
    plain.close()
    print(f"median ray1/local: {statistics.median(ray1_ratios):.2f} (the cost of sampling in a Ray actor)")
    print(f"median procs{args.workers}/local: {statistics.median(plain_ratios):.2f} (the same shards in plain "
          f"processes: what this machine allows {args.workers} workers)")
    print(f"ray_scaling: workers={args.workers} speedup={statistics.median(speedups):.2f} "
          f"identical={str(identical).lower()}")


if __name__ == "__main__":
    main()
