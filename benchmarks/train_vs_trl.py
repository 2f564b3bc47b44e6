"""ratchet's trainer vs TRL's DPOTrainer: same model, same pairs, same batches, side by side.

    python benchmarks/train_vs_trl.py [--reps 3] [--pairs 64] [--batch-size 8] [--threads 1] [--share-prompt on]

Model: SmolLM2-135M-Instruct (``ratchet.models.resolve_model("smollm2-135m")``), float32, CPU.
Data: ``--pairs`` arithmetic prompts (``ratchet.data.arithmetic.make_problems``, ~70-token chat
prompt), each with a correct and a wrong worked solution of 32-115 tokens, synthesised
deterministically (the number of worked steps is drawn from a seeded RNG per pair).
Job: DPO (beta 0.1, sigmoid), full fine-tuning, one epoch, batch 8 (8 optimizer steps), lr 5e-6,
no warm-up, linear decay, AdamW (fused), grad-norm clip 1.0, max_length 512 (nothing truncated).

Each system runs in its own fresh process, ``--reps`` times, alternating which goes first; the
table shows medians. Time is what a user waits for once the model is loaded: for ratchet the
``train_offline()`` call (tokenisation, reference log-prob precomputation on a fresh copy of the pairs
file, training, saving the model); for TRL ``DPOTrainer(...)`` (tokenisation, its reference
log-prob precomputation) plus ``trainer.train()`` (no saving). Peak RSS is
``getrusage(RUSAGE_SELF).ru_maxrss`` at the end of each child.

TRL is configured as its users would for this job: ``DPOConfig`` defaults (gradient
checkpointing on) plus fp32 on CPU (``use_cpu=True``, ``bf16=False``) and
``precompute_ref_log_probs=True``, its best setting here (about the same speed as the default,
which keeps a second model and runs it every step, and less memory); ``--trl-precompute off``
runs the default. ratchet runs its batch of 8 one pair per forward pass
(``max_forward_tokens=256``, ``--max-forward-tokens``; gradients accumulate, the optimizer step is
the same) without gradient checkpointing; ``--ratchet-mode checkpoint`` runs it as one forward of 8 pairs with
gradient checkpointing instead, like TRL.

Threads: ``--threads`` (default 1) is applied to both children (``torch.set_num_threads`` and
``OMP_NUM_THREADS``). The machine this was written on has 2 cores shared with other jobs; with 2
threads there every operator waits for both OpenMP threads, and a descheduled thread stalls it, so
both systems ran slower than with 1 (TRL: 112-189 s vs 92-96 s for 8 pairs) and the ratio moved
with the load.

Alignment: both read the pairs in file order with no shuffling (TRL
``train_sampling_strategy="sequential"``, ratchet ``shuffle=False``), so step k sees the same 8
pairs in both; TRL gets the same token ids (the prompt is the chat-templated string, TRL appends
the EOS text ``<|im_end|>`` to each answer; ratchet appends the EOS id), checked by comparing the
mean chosen log-prob of step 1. TRL's loss per step is read from ``compute_loss`` itself
(wrapped), not from its rounded logs.

Hardware: the ratchet child measures the machine's matrix-product limit at its thread count just
before training (``machine.matmul_gflops``) and counts the model FLOPs of every forward ratchet
runs, from the packed batches themselves (``batches.pack`` wrapped): per real token
``machine.forward_flops_per_token`` at the token's context length (its position + 1: in a shared
row a token attends to its own sequence only), less the LM head where no token is scored (ratchet
applies it only there); padding is not counted. Training forwards count 3x (backward = 2 x
forward; recomputation under gradient checkpointing is not model math), the reference pass 1x.
``flop_util`` = those FLOPs / ``train_offline()`` seconds / the matrix-product limit;
``prompt_tokens_per_pair`` = prompt tokens the training forwards compute per pair (tokens that no
sequence scores: 2 x the prompt with one row per sequence, 1 x with shared-prefix packing).
``--share-prompt off`` runs ratchet with one row per sequence in both passes (the layout before
shared-prefix packing), for before/after comparisons.

The last line is machine-readable:
``train_vs_trl: speedup=<ratchet pairs/s / TRL pairs/s> memory_ratio=<ratchet peak RSS / TRL
peak RSS> loss_step1_absdiff=<|difference of the first step's loss|> flop_util=<ratchet model
FLOP/s / matmul FLOP/s> prompt_tokens_per_pair=<prompt tokens ratchet computes per pair>``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BETA, LR, MAX_LENGTH = 0.1, 5e-6, 512
FILLER = [
    "I read the question again and write down every number.",
    "The question asks for one whole number at the end.",
    "I check which operation each sentence describes.",
    "Only the actions described change the quantities.",
    "The units stay the same, so no conversion is needed.",
    "Each intermediate result is a whole number, a good sign.",
    "Let me double-check by redoing it in a different order.",
    "Writing the steps out keeps small slips from going unnoticed.",
]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs: a correct and a wrong worked solution of a varying number of steps."""
    from ratchet.data.arithmetic import make_problems

    rng = random.Random(seed)
    pairs = []
    for p in make_problems(n, split="train", seed=seed):
        answer = int(p["answer"])
        numbers = re.findall(r"\d+", p["messages"][0]["content"])
        worked = f"The numbers are {', '.join(numbers)}."

        def solution(k: int, result: int) -> str:
            steps = [f"Step {i + 1}: {FILLER[(i + k) % len(FILLER)]}" for i in range(k)]
            return "\n".join(steps + [worked, f"Answer: {result}"])

        pairs.append({"id": p["id"], "messages": p["messages"],
                      "chosen": solution(rng.randint(1, 6), answer),
                      "rejected": solution(rng.randint(1, 6), answer + rng.choice([-3, -2, -1, 1, 2, 5]))})
    return pairs


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ModelFlops:
    """Model FLOPs and prompt tokens of every packed forward ratchet runs, read from the batches
    ``ratchet.train.batches.pack`` builds for the training step (``kind`` train, 3 x forward) and
    the reference pass (``ref``, forward only). ``share`` False forces one row per sequence."""

    def __init__(self, config, share: bool = True):
        self.config, self.share = config, share
        self.flops = {"train": 0.0, "ref": 0.0}
        self.prompt = {"train": 0, "ref": 0}
        self.tokens = {"train": 0, "ref": 0}
        self.pairs = {"train": 0, "ref": 0}

    def wrap(self, module, kind: str) -> None:
        original = module.pack

        def counting(examples, names, pad_id, *, share_prompt):
            packed = original(examples, names, pad_id, share_prompt=share_prompt and self.share)
            self.add(packed, kind, len(examples))
            return packed

        module.pack = counting

    def add(self, packed, kind: str, pairs: int) -> None:
        from machine import forward_flops_per_token

        n = packed.tokens
        context = float((packed.position_ids[packed.real] + 1).sum()) / n  # mean keys a token attends
        unscored = n - len(packed.labels)  # positions whose hidden state never meets the LM head
        forward = n * forward_flops_per_token(self.config, context) \
            - 2 * unscored * self.config.hidden_size * self.config.vocab_size
        self.flops[kind] += forward * (3 if kind == "train" else 1)
        self.prompt[kind] += packed.prompt_tokens
        self.tokens[kind] += n
        self.pairs[kind] += pairs


def run_ratchet(pairs_file: Path, batch_size: int, work: Path, mode: str = "split", share: bool = True,
                max_forward_tokens: int = 256) -> dict:
    import torch

    import ratchet.train.reference
    import ratchet.train.step
    from machine import matmul_gflops
    from ratchet.models import load_model
    from ratchet.train.offline import train_offline

    model, tokenizer = load_model("smollm2-135m", dtype="float32")
    counter = ModelFlops(model.config, share)
    counter.wrap(ratchet.train.step, "train")
    counter.wrap(ratchet.train.reference, "ref")
    limit = matmul_gflops()  # this process, this thread count, just before the run
    fresh = work / "pairs.jsonl"  # a fresh copy: the reference log-probs are computed, not read from a cache
    shutil.copy(pairs_file, fresh)
    t0, cpu0 = time.perf_counter(), time.process_time()
    summary = train_offline(model, tokenizer, fresh, work / "out", loss="dpo", loss_params={"beta": BETA}, lr=LR,
                    batch_size=batch_size, grad_accum=1, max_length=MAX_LENGTH, warmup_ratio=0.0,
                    max_grad_norm=1.0, shuffle=False, checkpoint_every=0, progress=False, share_prompt=share,
                    **({"max_forward_tokens": max_forward_tokens} if mode == "split" else {"gradient_checkpointing": True}))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows = [json.loads(line) for line in (work / "out" / "train_metrics.jsonl").read_text().splitlines()]
    flops = sum(counter.flops.values())
    return {"seconds": seconds, "cpu_seconds": cpu, "pairs": summary["pairs"], "steps": summary["steps"],
            "losses": [r["loss"] for r in rows], "chosen_logps_step1": rows[0]["chosen_logps"],
            "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(), "matmul_gflops": limit,
            "model_gflop": flops / 1e9, "flop_util": flops / seconds / (limit * 1e9),
            "train_gflop_per_pair": counter.flops["train"] / 1e9 / max(counter.pairs["train"], 1),
            "ref_gflop_per_pair": counter.flops["ref"] / 1e9 / max(counter.pairs["ref"], 1),
            "prompt_tokens_per_pair": counter.prompt["train"] / max(counter.pairs["train"], 1),
            "tokens_per_pair": counter.tokens["train"] / max(counter.pairs["train"], 1)}


def run_trl(pairs_file: Path, batch_size: int, work: Path, precompute: bool = True) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from ratchet.models import resolve_model

    where = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    data = Dataset.from_list([{"prompt": tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True,
                                                                       tokenize=False),
                               "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=batch_size,
                     gradient_accumulation_steps=1, learning_rate=LR, num_train_epochs=1, max_length=MAX_LENGTH,
                     beta=BETA, use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", report_to="none",
                     train_sampling_strategy="sequential", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                     precompute_ref_log_probs=precompute)
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    losses, compute_loss = [], trainer.compute_loss

    def recording_compute_loss(*a, **kw):  # the exact float loss of each step, before any rounding
        out = compute_loss(*a, **kw)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recording_compute_loss
    trainer.train()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    logged = [h for h in trainer.state.log_history if "logps/chosen" in h]
    return {"seconds": seconds, "cpu_seconds": cpu, "pairs": len(rows), "steps": trainer.state.global_step, "losses": losses,
            "chosen_logps_step1": logged[0]["logps/chosen"], "peak_rss_mb": _peak_rss_mb()}


def child(system: str, pairs_file: Path, result: Path, args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    batch_size, trl_precompute = args.batch_size, args.trl_precompute == "on"
    with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as work:
        if system == "ratchet":
            out = run_ratchet(pairs_file, batch_size, Path(work), args.ratchet_mode, args.share_prompt == "on",
                              args.max_forward_tokens)
        else:
            out = run_trl(pairs_file, batch_size, Path(work), trl_precompute)
    result.write_text(json.dumps(out))


def _spawn(system: str, pairs_file: Path, args, work: Path, rep: int) -> dict:
    result = work / f"{system}-{rep}.json"
    cmd = [sys.executable, __file__, "--child", system, "--pairs-file", str(pairs_file), "--batch-size",
           str(args.batch_size), "--result", str(result), "--trl-precompute", args.trl_precompute,
           "--threads", str(args.threads), "--ratchet-mode", args.ratchet_mode, "--share-prompt", args.share_prompt,
           "--max-forward-tokens", str(args.max_forward_tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    out = json.loads(result.read_text())
    out["pairs_per_s"] = out["pairs"] / out["seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", choices=["ratchet", "trl"])
    ap.add_argument("--pairs-file", type=Path)
    ap.add_argument("--result", type=Path)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads of each child, the same for both (default 1: see the docstring)")
    ap.add_argument("--ratchet-mode", choices=["split", "checkpoint"], default="split",
                    help="split: one pair per forward, no gradient checkpointing; checkpoint: 8 pairs per forward "
                         "with gradient checkpointing")
    ap.add_argument("--max-forward-tokens", type=int, default=256,
                    help="split mode: packed tokens per forward pass (256: one pair; the trainer's default, none, "
                         "runs the whole micro-batch at once)")
    ap.add_argument("--share-prompt", choices=["on", "off"], default="on",
                    help="ratchet's shared-prefix packing (train_offline share_prompt): on, or off (one row per "
                         "sequence in training and in the reference pass: the layout before it)")
    ap.add_argument("--trl-precompute", choices=["on", "off"], default="on",
                    help="TRL's precompute_ref_log_probs: on (its best setting here: same speed, less memory) or "
                         "off (its default: a reference model kept and run every step)")
    args = ap.parse_args()
    precompute = args.trl_precompute == "on"
    if args.child:
        return child(args.child, args.pairs_file, args.result, args)

    from transformers import AutoTokenizer

    from ratchet.data.records import write_jsonl
    from ratchet.models import resolve_model

    work = Path(tempfile.mkdtemp(prefix="train_vs_trl-"))
    pairs = make_pairs(args.pairs)
    pairs_file = write_jsonl(work / "pairs.jsonl", pairs)
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    lengths = [len(tok(p[k])["input_ids"]) + 1 for p in pairs for k in ("chosen", "rejected")]
    prompt = len(tok(tok.apply_chat_template(pairs[0]["messages"], add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"])
    print(f"{args.pairs} pairs, completions {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
          f"prompt ~{prompt} tokens; batch {args.batch_size}; {args.reps} repetitions, each in a fresh process; "
          f"TRL precompute_ref_log_probs={precompute}; ratchet mode {args.ratchet_mode}, "
          f"share_prompt {args.share_prompt}; "
          f"{args.threads} thread(s) per process")
    runs: dict[str, list[dict]] = {"ratchet": [], "trl": []}
    for rep in range(args.reps):
        for system in (("ratchet", "trl") if rep % 2 == 0 else ("trl", "ratchet")):
            r = _spawn(system, pairs_file, args, work, rep)
            runs[system].append(r)
            print(f"  rep {rep + 1} {system:7s} {r['seconds']:7.1f} s  {r['pairs_per_s']:6.2f} pairs/s  "
                  f"(CPU {r['cpu_seconds']:7.1f} s)  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"step-1 loss {r['losses'][0]:.6f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_seconds", "pairs_per_s", "peak_rss_mb")}
           for s, rs in runs.items()}
    first = {s: rs[0] for s, rs in runs.items()}
    steps = min(len(first["ratchet"]["losses"]), len(first["trl"]["losses"]))
    max_diff = max(abs(a - b) for a, b in zip(first["ratchet"]["losses"][:steps], first["trl"]["losses"][:steps]))
    print()
    print(f"{'':26s} {'ratchet':>12s} {'TRL':>12s}")
    print(f"{'seconds (median)':26s} {med['ratchet']['seconds']:12.1f} {med['trl']['seconds']:12.1f}")
    print(f"{'CPU seconds (median)':26s} {med['ratchet']['cpu_seconds']:12.1f} {med['trl']['cpu_seconds']:12.1f}")
    print(f"{'pairs/s (median)':26s} {med['ratchet']['pairs_per_s']:12.3f} {med['trl']['pairs_per_s']:12.3f}")
    print(f"{'peak RSS MB (median)':26s} {med['ratchet']['peak_rss_mb']:12.0f} {med['trl']['peak_rss_mb']:12.0f}")
    print(f"{'optimizer steps':26s} {first['ratchet']['steps']:12d} {first['trl']['steps']:12d}")
    print(f"{'step-1 loss':26s} {first['ratchet']['losses'][0]:12.6f} {first['trl']['losses'][0]:12.6f}")
    print(f"{'step-1 mean chosen logp':26s} {first['ratchet']['chosen_logps_step1']:12.4f} "
          f"{first['trl']['chosen_logps_step1']:12.4f}")
    print(f"{'last-step loss':26s} {first['ratchet']['losses'][steps - 1]:12.6f} "
          f"{first['trl']['losses'][steps - 1]:12.6f}")
    print(f"{'max |loss diff| all steps':26s} {max_diff:12.2e}")
    hw = {k: statistics.median(x[k] for x in runs["ratchet"]) for k in
         ("matmul_gflops", "model_gflop", "flop_util", "train_gflop_per_pair", "ref_gflop_per_pair")}
    print(f"ratchet: {first['ratchet']['tokens_per_pair']:.1f} tokens per pair computed in training, "
          f"{first['ratchet']['prompt_tokens_per_pair']:.1f} of them prompt; model GFLOP per pair "
          f"{hw['train_gflop_per_pair']:.1f} training (3 x forward) + {hw['ref_gflop_per_pair']:.1f} reference; "
          f"{hw['model_gflop'] / med['ratchet']['seconds']:.1f} GFLOP/s of a {hw['matmul_gflops']:.1f} GFLOP/s "
          f"matrix-product limit at {first['ratchet']['threads']} thread(s) (medians)")
    speedup = med["ratchet"]["pairs_per_s"] / med["trl"]["pairs_per_s"]
    memory_ratio = med["ratchet"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"]
    absdiff = abs(first["ratchet"]["losses"][0] - first["trl"]["losses"][0])
    print(f"train_vs_trl: speedup={speedup:.2f} memory_ratio={memory_ratio:.2f} loss_step1_absdiff={absdiff:.2e} "
          f"flop_util={hw['flop_util']:.3f} prompt_tokens_per_pair={first['ratchet']['prompt_tokens_per_pair']:.1f}")


if __name__ == "__main__":
    main()
