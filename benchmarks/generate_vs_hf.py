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

Each repetition also measures the machine's compute limit (``machine.matmul_gflops``: a 2048-square
fp32 matrix product, same thread count) just before ratchet runs, and ``flop_util`` is the model
FLOPs ratchet ran per second over that limit: every position it computed, each prompt token once
(padding not counted) and every decoded row, at ``machine.forward_flops_per_token`` of that
position's context (``CachedSampler.work``); median over repetitions.

``--profile`` runs ratchet once more under ``torch.profiler`` and prints where the time went, by
phase of the decode loop and by kind of operator (the tables in ``docs/generation.md``).

Last line: ``generate_vs_hf: speedup=<x> tokens_per_s=<ratchet's median> flop_util=<median>``.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time
from collections import Counter

import torch

from ratchet.data import arithmetic
from ratchet.generate.base import SamplingParams
from ratchet.generate import engine
from ratchet.generate.engine import CachedSampler
from ratchet.generate.hf import HFSampler
from ratchet.models import load_model

try:  # run as a script (benchmarks/ on sys.path) or as a module of the repository root
    from machine import forward_flops_per_token, matmul_gflops
except ImportError:
    from benchmarks.machine import forward_flops_per_token, matmul_gflops

# The task's own stop strings; ("\n\n",) is what it held when this benchmark was written.
STOP = getattr(arithmetic, "STOP", ("\n\n",))


def run(sampler, prompts, params) -> tuple[float, int, list]:
    """Seconds, tokens kept and the samples (per prompt) of one ``sample`` call; ray_scaling.py too."""
    start = time.perf_counter()
    out = sampler.sample(prompts, params)
    seconds = time.perf_counter() - start
    samples = [s for per_prompt in out for s in per_prompt]
    assert len(samples) == len(prompts) * params.k
    return seconds, sum(s.num_tokens for s in samples), out


def finish_reasons(out: list) -> Counter:
    return Counter(s.finish_reason for per_prompt in out for s in per_prompt)


# Phases of the decode loop (where to find them in a module like ``generate.engine``), each profiled
# as a whole, and operator kinds within them.
PHASES = {"prefill": ("CachedSampler", "_prefill"), "admit (cache copy to rows)": ("_Batch", "admit"),
          "decode step (model)": ("_Batch", "forward"), "sampling": (None, "sample_tokens"),
          "tokens, stop checks": ("CachedSampler", "_advance"), "drop finished rows": ("_Batch", "drop")}
KINDS = {"matrix products": ("aten::mm", "aten::addmm"),
         "attention, softmax": ("aten::bmm", "aten::_softmax", "aten::_scaled_dot_product_flash_attention_for_cpu",
                                "aten::_scaled_dot_product_attention_math"),
         "copies (cache writes, cat, index)": ("aten::copy_", "aten::cat", "aten::index", "aten::_index_put_impl_",
                                               "aten::fill_", "aten::_to_copy", "aten::repeat_interleave")}


def _kind(name: str) -> str:
    return next((kind for kind, names in KINDS.items() if name in names), "other operators (norms, RoPE, ...)")


def profile(sampler, prompts, params, module=engine) -> None:
    """One more run of ``sampler`` (a ``CachedSampler`` of ``module``) under ``torch.profiler``: time
    per phase of the loop, and per operator kind within each phase (self time); what no operator
    accounts for is Python and dispatch."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    owners = {name: getattr(module, owner) if owner else module for name, (owner, _) in PHASES.items()}
    originals = {name: getattr(owners[name], attr) for name, (_, attr) in PHASES.items()}

    def tagged(name, f):
        def g(*a, **kw):
            with record_function(f"phase:{name}"):
                return f(*a, **kw)
        return g

    for name, (_, attr) in PHASES.items():
        setattr(owners[name], attr, tagged(name, originals[name]))
    try:
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            sampler.sample(prompts, params)
            wall = time.perf_counter() - start  # inside: not the profiler's own processing on exit
    finally:
        for name, (_, attr) in PHASES.items():
            setattr(owners[name], attr, originals[name])
    events = prof.events()
    # Phases never nest: an operator belongs to the phase whose interval holds its start.
    phases = sorted((e.time_range.start, e.time_range.end, e.name[6:]) for e in events if e.name.startswith("phase:"))
    starts = [start for start, _, _ in phases]
    phase_s, kind_s = Counter(), Counter()
    for start, end, name in phases:
        phase_s[name] += (end - start) / 1e6
    for event in events:
        if not event.name.startswith("aten::") or not event.self_cpu_time_total:
            continue
        at = bisect.bisect_right(starts, event.time_range.start) - 1
        inside = at >= 0 and event.time_range.start < phases[at][1]
        kind_s[(phases[at][2] if inside else "loop", _kind(event.name))] += event.self_cpu_time_total / 1e6
    work = getattr(sampler, "work", None)
    print(f"profile: {wall:.1f} s under the profiler" + (f", {work.positions} positions computed" if work else ""))
    print("| phase | s | % | " + " | ".join(KINDS) + " | other operators | Python, dispatch |")
    print("|---|---|---|" + "---|" * (len(KINDS) + 2))
    for name, seconds in [*phase_s.items(), ("loop", wall - sum(phase_s.values()))]:
        kinds = [kind_s[(name, kind)] for kind in [*KINDS, _kind("")]]
        python = seconds - sum(kinds)
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.0f} | " + " | ".join(f"{x:.1f}" for x in kinds)
              + f" | {python:.1f} |")


def sampling_arguments(description: str) -> argparse.ArgumentParser:
    """The model, prompts and sampling settings this benchmark and ``ray_scaling.py`` share."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64, help="sequences decoded together, in every sampler")
    ap.add_argument("--reps", type=int, default=3)
    return ap


def main() -> None:
    ap = sampling_arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0: torch's default")
    ap.add_argument("--profile", action="store_true", help="then profile one more ratchet run and print the tables")
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

    speedups, time_ratios, ratchet_tps, utils = [], [], [], []
    for rep in range(args.reps):
        params = SamplingParams(k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                stop=STOP, seed=rep)
        names = ["hf", "ratchet"] if rep % 2 == 0 else ["ratchet", "hf"]
        result, limit = {}, 0.0
        for name in names:
            if name == "ratchet":
                limit = matmul_gflops()  # just before: the machine's state while ratchet runs
            result[name] = run(samplers[name], prompts, params)
        (hf_s, hf_tok, hf_out), (r_s, r_tok, r_out) = result["hf"], result["ratchet"]
        hf_why, r_why = finish_reasons(hf_out), finish_reasons(r_out)
        speedups.append((r_tok / r_s) / (hf_tok / hf_s))
        time_ratios.append(hf_s / r_s)
        ratchet_tps.append(r_tok / r_s)
        work = samplers["ratchet"].work
        flops = work.positions * forward_flops_per_token(model.config, work.mean_context)
        utils.append(flops / r_s / 1e9 / limit)
        print(f"rep {rep + 1} (first: {names[0]}): "
              f"hf {hf_s:.1f} s, {hf_tok} tokens kept, {hf_tok / hf_s:.1f} tok/s, {dict(hf_why)} | "
              f"ratchet {r_s:.1f} s, {r_tok} tokens kept, {r_tok / r_s:.1f} tok/s, {dict(r_why)} | "
              f"throughput ratio {speedups[-1]:.2f}, time ratio {time_ratios[-1]:.2f} | ratchet computed "
              f"{work.positions} positions (mean context {work.mean_context:.0f}), {flops / 1e9:.0f} GFLOP, "
              f"{flops / r_s / 1e9:.1f} GFLOP/s; matmul limit {limit:.1f} GFLOP/s, flop_util {utils[-1]:.3f}",
              flush=True)
    print(f"median time ratio (hf s / ratchet s): {statistics.median(time_ratios):.2f}")
    if args.profile:
        profile(samplers["ratchet"], prompts, SamplingParams(k=args.k, temperature=args.temperature,
                                                             max_new_tokens=args.max_new_tokens, stop=STOP))
    print(f"generate_vs_hf: speedup={statistics.median(speedups):.2f} "
          f"tokens_per_s={statistics.median(ratchet_tps):.1f} flop_util={statistics.median(utils):.3f}")


if __name__ == "__main__":
    main()
