"""Benchmark: ratchet's ``CachedSampler`` against ``model.generate(num_return_sequences=k)``.

SmolLM2-135M-Instruct on CPU, 32 arithmetic prompts, k=8, temperature 0.8, at most 96 new tokens,
the arithmetic task's stop strings. The baseline is ``HFSampler`` (transformers' ``generate`` on the
same length-sorted batches of ``batch_size // k`` prompts, with ``stop_strings=``). Both count the
tokens they keep the same way (after cutting at a stop string or EOS). The two samplers run side by
side in each repetition, alternating which goes first, because the CPU is shared and its speed
drifts; the speedup is the median over repetitions of the ratio of kept tokens per second (the
wall-time ratio is printed too).

    python benchmarks/generate_vs_hf.py [--threads 1] [--reps 3]

Threads default to 1: on this shared 2-core machine, two OpenMP threads ran decode steps 4x to
30x slower than one whenever other jobs held a core (measured), for both samplers; ``--threads 0``
keeps torch's default.

Last line: ``generate_vs_hf: speedup=<x> tokens_per_s=<ratchet's median>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch

from ratchet.data import arithmetic
from ratchet.generate.base import SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.generate.hf import HFSampler
from ratchet.models import load_model

# The task's own stop strings; ("\n\n",) is what it held when this benchmark was written.
STOP = getattr(arithmetic, "STOP", ("\n\n",))


def run(sampler, prompts, params) -> tuple[float, int, Counter]:
    start = time.perf_counter()
    out = sampler.sample(prompts, params)
    seconds = time.perf_counter() - start
    samples = [s for per_prompt in out for s in per_prompt]
    assert len(samples) == len(prompts) * params.k
    return seconds, sum(s.num_tokens for s in samples), Counter(s.finish_reason for s in samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64, help="sequences decoded together, both samplers")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0: torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    prompts = [p["messages"] for p in arithmetic.make_problems(args.prompts, split="train", seed=0)]
    samplers = {"hf": HFSampler(model, tokenizer, batch_size=args.batch_size, progress=False),
                "ratchet": CachedSampler(model, tokenizer, batch_size=args.batch_size, progress=False)}
    print(f"model={args.model} prompts={args.prompts} k={args.k} temperature={args.temperature} "
          f"max_new_tokens={args.max_new_tokens} stop={STOP!r} batch_size={args.batch_size} "
          f"threads={torch.get_num_threads()}", flush=True)

    speedups, time_ratios, ratchet_tps = [], [], []
    for rep in range(args.reps):
        params = SamplingParams(k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                stop=STOP, seed=rep)
        names = ["hf", "ratchet"] if rep % 2 == 0 else ["ratchet", "hf"]
        result = {name: run(samplers[name], prompts, params) for name in names}
        (hf_s, hf_tok, hf_why), (r_s, r_tok, r_why) = result["hf"], result["ratchet"]
        speedups.append((r_tok / r_s) / (hf_tok / hf_s))
        time_ratios.append(hf_s / r_s)
        ratchet_tps.append(r_tok / r_s)
        print(f"rep {rep + 1} (first: {names[0]}): "
              f"hf {hf_s:.1f} s, {hf_tok} tokens kept, {hf_tok / hf_s:.1f} tok/s, {dict(hf_why)} | "
              f"ratchet {r_s:.1f} s, {r_tok} tokens kept, {r_tok / r_s:.1f} tok/s, {dict(r_why)} | "
              f"throughput ratio {speedups[-1]:.2f}, time ratio {time_ratios[-1]:.2f}", flush=True)
    print(f"median time ratio (hf s / ratchet s): {statistics.median(time_ratios):.2f}")
    print(f"generate_vs_hf: speedup={statistics.median(speedups):.2f} "
          f"tokens_per_s={statistics.median(ratchet_tps):.1f}")


if __name__ == "__main__":
    main()
