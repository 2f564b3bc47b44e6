"""GPU check: one loop round, generation speed and training MFU of ratchet on one CUDA GPU.

Ready for the day a GPU is lent ("Any model, any device", item 7). It needs the repository, PyTorch,
transformers and a CUDA GPU, nothing else: no download. The models are randomly initialised from
configs written here and the tokenizer is a byte-level one built here (3 special tokens, 256 bytes,
then filler tokens up to the model's vocabulary size), so the numbers measure speed, not quality.

    python benchmarks/gpu_check.py                       # cuda, bfloat16 (estimated 2-3 min on an H100)
    python benchmarks/gpu_check.py --device cpu --dtype float32 --quick    # smoke test, < 1 min on CPU

Three parts, each timed and printed:

1. One loop round end to end on the SmolLM2-135M config (LlamaForCausalLM: hidden 576, 30 layers,
   9 heads / 3 kv heads, vocab 49152, tied embeddings): arithmetic prompts (``make_problems``),
   ``stages.generate`` (CachedSampler, k samples at temperature 1), ``stages.judge`` with a judge
   defined here that always separates samples of a random model (longer text is better, ties
   broken by a hash of the text), ``stages.pair`` (best_vs_worst, truncated samples kept),
   ``stages.train_model`` (DPO, a few optimizer steps), ``stages.evaluate`` (greedy held-out answers,
   the ``answer`` verifier). ``round_ok`` is true if every stage wrote its files, the losses are
   finite, and the models stayed on the asked device in the asked dtype.
2. Generation tokens/s, ratchet's ``CachedSampler`` against transformers' ``model.generate`` on the
   same left-padded batch of prompts, greedy, the same ``max_new_tokens``, EOS ignored by both so
   every row decodes exactly ``max_new_tokens`` tokens (the same work); one warm-up, then the median
   of 3 repetitions (alternating which goes first), on the 135M config and on the ~1B config.
   ``gen_speedup`` = ratchet tokens/s / HF tokens/s on the 135M config.
3. Training MFU on a ~1B Llama config (the Llama-3.2-1B shape: hidden 2048, intermediate 8192,
   16 layers, 32 heads / 8 kv heads, tied embeddings, with SmolLM2's vocabulary of 49152:
   1.07B parameters): the whole ``ratchet.train.offline.train_offline()`` on synthetic DPO pairs, timed per
   optimizer step from its train_metrics.jsonl, the first steps left out as warm-up. The reference
   log-probs are precomputed once before the steps (train_offline()'s design), so the timed steps hold no
   reference forward: model FLOPs = 6 * params * tokens (real tokens of the packed batches: each
   prompt once, both completions). ``train_mfu`` = FLOPs / seconds / the GPU's bf16 dense peak
   (by ``torch.cuda.get_device_name()``: H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312,
   L4 121; otherwise ``--peak-tflops``, else nan).

The models are built here (``model.to``-style, directly on ``--device`` in ``--dtype``) and handed
to the stage functions, so the loop's own model loading (``loop.run``'s ``load_model`` calls, a
``train.reference: initial`` reference, an ``llm`` or ``reward_model`` judge loading its model) is
not exercised. What it does reveal: ``train_offline()`` places the model on accelerate's device (the first
visible GPU, whatever device the model was on) with bf16 autocast on any GPU; a stage that moves
the model or changes its dtype makes ``round_ok`` false and is printed as a PROBLEM line. With
``--quick`` there is one tiny config, so part 2 runs once.

Target: ``train_mfu >= 0.40`` for the ~1B config on an H100-class GPU. None of the figures here has
been measured: this script was written and smoke-tested (``--quick``) on a CPU-only machine, where
the MFU is meaningless (nan unless ``--peak-tflops`` is given).

The last line printed is exactly
``gpu_check: round_ok=<true|false> gen_speedup=<x> train_mfu=<x>`` (two decimals, or nan).
Exit status 0 if every part ran and the round is ok, 1 otherwise, 2 if CUDA is asked for but absent.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

# ---------------------------------------------------------------------------------------------
# Configs (random-initialised; nothing is downloaded)

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    max_position_embeddings=8192, rms_norm_eps=1e-5)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=49152, tie_word_embeddings=True, rope_theta=500000.0,
                max_position_embeddings=8192, rms_norm_eps=1e-5)  # 1.07B parameters (printed at run time)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True, rope_theta=10000.0,
            max_position_embeddings=2048, rms_norm_eps=1e-5)

# bf16 dense peak FLOP/s by device name (substring, checked in order)
PEAKS = [("H100 PCIE", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12)]

SIZES = {  # per part; --quick shrinks everything so the CPU smoke test runs in seconds
    "full": dict(round_prompts=16, round_k=4, round_new=48, round_heldout=8, round_eval_new=32, round_batch=4,
                 gen_prompts=64, gen_new=128, gen_reps=3,
                 mfu_pairs_per_step=16, mfu_steps=30, mfu_warmup_steps=3, mfu_completion_chars=384),
    "quick": dict(round_prompts=4, round_k=2, round_new=16, round_heldout=2, round_eval_new=8, round_batch=2,
                  gen_prompts=4, gen_new=8, gen_reps=3,
                  mfu_pairs_per_step=2, mfu_steps=4, mfu_warmup_steps=1, mfu_completion_chars=32),
}

# ---------------------------------------------------------------------------------------------
# Tokenizer and models

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_ID, BOS_ID, EOS_ID = 2, 1, 2  # <|im_end|> ends a turn and pads, as SmolLM2's tokenizer does


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what the ByteLevel pre-tokenizer writes)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def make_tokenizer(vocab_size: int):
    """Byte-level tokenizer with the SmolLM2 specials and chat template (the idea of
    ``tests/conftest.py::make_tokenizer``), its vocabulary padded to ``vocab_size`` with filler
    tokens. A filler decodes to the text `` w<i>`` (so a random model's samples are text of varied
    length), and encoding never produces one (no merges: text always becomes single bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = _bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(b2u.values()):
        vocab[ch] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:
        vocab["".join(b2u[b] for b in f" w{i}".encode())] = len(vocab)
        i += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def build_model(shape: dict, device: str, dtype: torch.dtype, seed: int = 0):
    """A random LlamaForCausalLM of ``shape``, initialised directly on ``device`` in ``dtype``.

    ``eos_token_id`` is left unset in the config so that transformers' ``generate`` never stops a
    row early (part 2); ratchet's samplers and trainer read EOS from the tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=None,
                         attn_implementation="sdpa")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings are one parameter, counted once


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _mem(device: str) -> str:
    if not device.startswith("cuda"):
        return ""
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f", peak GPU memory {peak:.1f} GiB"


def _where(model) -> str:
    p = next(model.parameters())
    return f"{p.device.type}/{str(p.dtype).removeprefix('torch.')}"


# ---------------------------------------------------------------------------------------------
# Part 1: one loop round


class LongerJudge:
    """Longer completion = better; ties broken by a hash of the text. Always separates two
    different samples, so a random model's samples always make pairs. Judges no correctness."""

    def __init__(self) -> None:
        pass

    def judge(self, prompt: dict, completions) -> list:
        from ratchet.judge.base import Judgment

        return [Judgment(score=len(t) + int(hashlib.sha256(t.encode()).hexdigest()[:6], 16) / 2**24 / 10,
                         correct=None, detail={"chars": len(t)}) for t in completions]


JUDGE_NAME = "gpu_check_longer"


def part_round(args, size: dict, shape: dict, tokenizer, work: Path) -> dict:
    from ratchet.config import EvalConfig, GenerateConfig, JudgeConfig, LossConfig, PairConfig, TrainConfig
    from ratchet.data.arithmetic import make_problems
    from ratchet.data.records import read_jsonl, write_jsonl
    from ratchet.judge import JUDGES
    from ratchet.loop import stages

    JUDGES.setdefault(JUDGE_NAME, LongerJudge)  # registered so stages.judge builds it by name, like any judge
    rd = work / "round_1"
    model = build_model(shape, args.device, args.dtype)
    print(f"  model {n_params(model) / 1e6:.1f}M parameters on {_where(model)}")
    problems: list[str] = []

    def check(stage: str, model_now) -> None:  # did a stage move the model or change its dtype?
        p, asked = next(model_now.parameters()), torch.device(args.device)
        if p.dtype != args.dtype or p.device.type != asked.type or asked.index not in (None, p.device.index):
            problems.append(f"{stage}: model on {p.device}/{p.dtype}, asked for {args.device}/{args.dtype_name}")

    prompts = write_jsonl(rd / "prompts.jsonl", make_problems(size["round_prompts"], split="train", seed=0))
    heldout = write_jsonl(work / "heldout.jsonl", make_problems(size["round_heldout"], split="heldout", seed=0))
    timings = {}

    t = time.perf_counter()
    gen = GenerateConfig(k=size["round_k"], temperature=1.0, max_new_tokens=size["round_new"], batch_size=64)
    completions = stages.generate(model, tokenizer, prompts, rd / "completions.jsonl", gen, progress=False)
    _sync(args.device)
    timings["generate"] = time.perf_counter() - t
    check("generate", model)

    t = time.perf_counter()
    judge_cfg = JudgeConfig(name=JUDGE_NAME)
    judgments = stages.judge(completions, rd / "judgments.jsonl", judge_cfg)
    timings["judge"] = time.perf_counter() - t

    t = time.perf_counter()
    pair_cfg = PairConfig(strategy="best_vs_worst", max_pairs_per_prompt=1, drop_truncated=False)
    pairs = stages.pair(completions, judgments, rd / "pairs.jsonl", pair_cfg, loss="dpo")
    timings["pair"] = time.perf_counter() - t
    n_pairs = len(read_jsonl(pairs))

    t = time.perf_counter()
    # stages.train_model -> train.offline.train_offline: the reference log-probs come from the policy itself (no
    # reference_model given), on the accelerator's device. train_offline() places the model on
    # accelerate's device (cuda whenever one is visible), whatever device the model was on.
    train_cfg = TrainConfig(loss=LossConfig(name="dpo", params={"beta": 0.1}), lr=1e-5,
                            batch_size=size["round_batch"], max_length=1024, warmup_ratio=0.0, checkpoint_every=0)
    summary = stages.train_model(model, tokenizer, pairs, rd / "train", train_cfg, progress=False)
    _sync(args.device)
    timings["train"] = time.perf_counter() - t
    check("train", model)
    rows = read_jsonl(rd / "train" / "train_metrics.jsonl")
    losses = [r["loss"] for r in rows]

    t = time.perf_counter()
    model.eval()
    eval_cfg = EvalConfig(max_new_tokens=size["round_eval_new"], batch_size=64, judge="answer")
    metrics = stages.evaluate(model, tokenizer, heldout, rd / "eval", eval_cfg, judge_cfg, progress=False)
    _sync(args.device)
    timings["evaluate"] = time.perf_counter() - t
    check("evaluate", model)

    expected = [prompts, completions, judgments, pairs, rd / "train" / "model" / "config.json",
                rd / "train" / "train_metrics.jsonl", rd / "train" / "train_summary.json",
                rd / "eval" / "answers.jsonl", rd / "eval" / "judgments.jsonl", rd / "eval" / "metrics.json"]
    problems += [f"missing or empty: {p.relative_to(work)}" for p in map(Path, expected)
                 if not p.is_file() or p.stat().st_size == 0]
    if not any((rd / "train" / "model").glob("*.safetensors")):
        problems.append("train/model holds no safetensors weights")
    if n_pairs == 0:
        problems.append("no pairs")
    if not losses or not all(math.isfinite(x) for x in losses):
        problems.append(f"losses not all finite: {losses}")
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"  {size['round_prompts']} prompts x k={size['round_k']}, {n_pairs} pairs, {summary['steps']} steps, "
          f"losses {[round(x, 4) for x in losses]}, held-out {metrics['metric']} "
          f"{metrics[metrics['metric']]:.3f} (n={metrics['n']}){_mem(args.device)}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    del model
    _free(args.device)
    return {"ok": not problems, "problems": problems}


# ---------------------------------------------------------------------------------------------
# Part 2: generation tokens/s, CachedSampler vs model.generate


def _prompt_batch(tokenizer, n: int):
    from ratchet.data.arithmetic import make_problems
    from ratchet.data.tokenize import prompt_ids

    messages = [p["messages"] for p in make_problems(n, split="train", seed=1)]
    encoded = [prompt_ids(tokenizer, m) for m in messages]
    width = max(map(len, encoded))
    input_ids = torch.tensor([[PAD_ID] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    return messages, input_ids, mask


def part_generate(args, size: dict, shape: dict, tokenizer, label: str) -> dict:
    from ratchet.generate.base import SamplingParams
    from ratchet.generate.engine import CachedSampler

    model = build_model(shape, args.device, args.dtype)
    n, new = size["gen_prompts"], size["gen_new"]
    messages, input_ids, mask = _prompt_batch(tokenizer, n)
    input_ids, mask = input_ids.to(args.device), mask.to(args.device)
    sampler = CachedSampler(model, tokenizer, batch_size=n, progress=False)
    sampler.eos = None  # EOS ignored: every row decodes exactly `new` tokens, as generate() below

    def ratchet(max_new: int) -> int:
        out = sampler.sample(messages, SamplingParams(k=1, temperature=0.0, max_new_tokens=max_new))
        return sum(s[0].num_tokens for s in out)

    @torch.inference_mode()
    def hf(max_new: int) -> int:
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=PAD_ID)
        return out[:, input_ids.shape[1]:].numel()

    runners = {"ratchet": ratchet, "hf": hf}
    for name in runners:  # warm-up: kernels, allocator, cuBLAS heuristics
        runners[name](max(2, new // 4))
    _sync(args.device)
    tps = {"ratchet": [], "hf": []}
    for rep in range(size["gen_reps"]):
        for name in (("hf", "ratchet") if rep % 2 == 0 else ("ratchet", "hf")):
            _sync(args.device)
            t = time.perf_counter()
            tokens = runners[name](new)
            _sync(args.device)
            seconds = time.perf_counter() - t
            if tokens != n * new:
                raise RuntimeError(f"{name} decoded {tokens} tokens, expected {n} x {new}")
            tps[name].append(tokens / seconds)
    med = {k: statistics.median(v) for k, v in tps.items()}
    speedup = med["ratchet"] / med["hf"]
    print(f"  {label}: {n_params(model) / 1e6:.1f}M params, batch {n} prompts (prompt width {input_ids.shape[1]}), "
          f"{new} new tokens, greedy: ratchet {med['ratchet']:.0f} tok/s, HF generate {med['hf']:.0f} tok/s, "
          f"speedup {speedup:.2f} (per rep: ratchet {[round(x) for x in tps['ratchet']]}, "
          f"hf {[round(x) for x in tps['hf']]}){_mem(args.device)}")
    del model, sampler
    _free(args.device)
    return {"ratchet_tps": med["ratchet"], "hf_tps": med["hf"], "speedup": speedup}


# ---------------------------------------------------------------------------------------------
# Part 3: training MFU


def synthetic_pairs(n: int, chars: int, seed: int = 0) -> list[dict]:
    """``n`` DPO pairs on arithmetic prompts, completions of random words, 3/4 to all of ``chars``
    characters (one token per character with this tokenizer, plus EOS)."""
    from ratchet.data.arithmetic import make_problems

    rng = random.Random(seed)

    def text(length: int) -> str:
        words = []
        while sum(len(w) + 1 for w in words) < length:
            words.append("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))))
        return " ".join(words)[:length]

    return [{"id": p["id"], "messages": p["messages"], "chosen": text(rng.randint(3 * chars // 4, chars)),
             "rejected": text(rng.randint(3 * chars // 4, chars))}
            for p in make_problems(n, split="train", seed=seed)]


def peak_flops(args) -> tuple[float, str]:
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    if args.device.startswith("cuda"):
        name = torch.cuda.get_device_name().upper()
        for key, peak in PEAKS:
            if (key == "L4" and any(w == "L4" for w in name.split())) or (key != "L4" and key in name):
                return peak, f"{torch.cuda.get_device_name()} ({key})"
        return float("nan"), f"{torch.cuda.get_device_name()} (unknown: give --peak-tflops)"
    return float("nan"), "CPU (give --peak-tflops for a number)"


def part_mfu(args, size: dict, shape: dict, tokenizer, work: Path) -> dict:
    from ratchet.data.records import read_jsonl, write_jsonl
    from ratchet.train.offline import train_offline

    model = build_model(shape, args.device, args.train_dtype)
    params = n_params(model)
    embed = model.get_input_embeddings().weight.numel()
    batch, steps, warm = size["mfu_pairs_per_step"], size["mfu_steps"], size["mfu_warmup_steps"]
    pairs = write_jsonl(work / "mfu" / "pairs.jsonl",
                        synthetic_pairs(batch * steps, size["mfu_completion_chars"]))
    t = time.perf_counter()
    # The whole train_offline(): tokenisation, reference log-probs (the policy at start, one forward over
    # every pair, before the steps), the steps (timed below from train_metrics.jsonl), saving.
    summary = train_offline(model, tokenizer, pairs, work / "mfu" / "out", loss="dpo", loss_params={"beta": 0.1}, lr=1e-6,
                    batch_size=batch, grad_accum=1, max_length=2048, warmup_ratio=0.0, max_grad_norm=1.0,
                    shuffle=False, checkpoint_every=0, progress=False)
    _sync(args.device)
    total = time.perf_counter() - t
    where = _where(model)
    rows = read_jsonl(work / "mfu" / "out" / "train_metrics.jsonl")
    gb, n_pairs = summary["global_batch"], summary["pairs"]
    # Each row's rates are cumulative since the first step began: recover elapsed time and tokens.
    elapsed = [min(k * gb, n_pairs) / r["pairs_per_s"] for k, r in enumerate(rows, 1)]
    tokens = [r["tokens_per_s"] * e for r, e in zip(rows, elapsed)]
    if len(rows) <= warm:
        raise RuntimeError(f"{len(rows)} steps, not more than the {warm} warm-up steps")
    seconds, toks = elapsed[-1] - elapsed[warm - 1], tokens[-1] - tokens[warm - 1]
    timed = len(rows) - warm
    flops = 6 * params * toks
    peak, peak_from = peak_flops(args)
    mfu = flops / seconds / peak
    mfu_nonembed = 6 * (params - embed) * toks / seconds / peak
    print(f"  {params / 1e6:.1f}M params ({(params - embed) / 1e6:.1f}M non-embedding) on {where}, "
          f"train dtype {args.train_dtype_name}, DPO, {gb} pairs/step, {len(rows)} steps, "
          f"{toks / timed:.0f} tokens/step; train_offline() took {total:.1f} s in all "
          f"(tokenising, reference pass, steps, saving)")
    print(f"  timed steps {warm + 1}-{len(rows)}: {seconds / timed * 1e3:.0f} ms/step, {toks / seconds:.0f} tokens/s, "
          f"{flops / seconds / 1e12:.1f} TFLOP/s (6 * params * tokens); peak {peak / 1e12:.0f} TFLOP/s from {peak_from}"
          f": MFU {mfu:.3f} (with non-embedding params: {mfu_nonembed:.3f}); final loss {rows[-1]['loss']:.4f}"
          f"{_mem(args.device)}")
    del model
    _free(args.device)
    return {"mfu": mfu, "tflops": flops / seconds / 1e12}


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                    help="weights' dtype in every part (default bfloat16)")
    ap.add_argument("--train-dtype", default=None, choices=["bfloat16", "float16", "float32"],
                    help="weights' dtype in the MFU part (default: --dtype); float32 there is what ratchet's CLI "
                         "did before its model.dtype option: fp32 weights with accelerate's bf16 autocast on a GPU")
    ap.add_argument("--quick", action="store_true",
                    help="a 2-layer hidden-64 model for every part and few tokens (a smoke test, e.g. on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak in TFLOP/s for the MFU (default: by GPU name; none on CPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads while running (default: 1 on CPU, where two OpenMP threads on a "
                         "shared 2-core machine ran several times slower than one; torch's default on a GPU)")
    ap.add_argument("--parts", default="round,generate,mfu", help="comma-separated subset of round,generate,mfu")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the files here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    args.dtype_name, args.dtype = args.dtype, getattr(torch, args.dtype)
    args.train_dtype_name = args.train_dtype or args.dtype_name
    args.train_dtype = getattr(torch, args.train_dtype_name)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} asked for, but CUDA is not available "
              f"(torch {torch.__version__}, torch.cuda.is_available() is False)")
        return 2
    threads = torch.get_num_threads()
    if args.threads or not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads or 1)
    try:
        return _main(args)
    finally:
        torch.set_num_threads(threads)  # main() also runs in-process from the tests


def _main(args) -> int:
    start = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    small, large = (TINY, TINY) if args.quick else (SMOLLM2_135M, LLAMA_1B)
    names = ("tiny", "tiny") if args.quick else ("135M", "~1B")
    parts = set(args.parts.split(","))
    import transformers

    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"gpu_check: device {args.device}{gpu}, dtype {args.dtype_name}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {torch.get_num_threads()} CPU threads"
          f"{', quick sizes' if args.quick else ''}", flush=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizers = {}

    def tokenizer_for(shape):
        if shape["vocab_size"] not in tokenizers:
            tokenizers[shape["vocab_size"]] = make_tokenizer(shape["vocab_size"])
        return tokenizers[shape["vocab_size"]]

    failed: list[str] = []

    def run(name: str, fn):
        t = time.perf_counter()
        print(f"[{name}]", flush=True)
        try:
            return fn()
        except Exception:  # a check reports every part, so one failure does not hide the others
            traceback.print_exc(file=sys.stdout)
            failed.append(name)
            return None
        finally:
            print(f"[{name}] {time.perf_counter() - t:.1f} s (total {time.perf_counter() - start:.1f} s)", flush=True)

    round_ok, speedup, mfu = False, float("nan"), float("nan")
    try:
        if "round" in parts:
            r = run(f"1 loop round, {names[0]} config", lambda: part_round(args, size, small, tokenizer_for(small),
                                                                          work))
            round_ok = bool(r and r["ok"])
        if "generate" in parts:
            g = run(f"2 generation, {names[0]} config",
                    lambda: part_generate(args, size, small, tokenizer_for(small), names[0]))
            speedup = g["speedup"] if g else float("nan")
            if not args.quick:  # --quick has one tiny config for both
                run(f"2 generation, {names[1]} config",
                    lambda: part_generate(args, size, large, tokenizer_for(large), names[1]))
        if "mfu" in parts:
            m = run(f"3 training MFU, {names[1]} config",
                    lambda: part_mfu(args, size, large, tokenizer_for(large), work))
            mfu = m["mfu"] if m else float("nan")
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"failed parts: {failed}")
    print(f"elapsed {time.perf_counter() - start:.1f} s")
    print(f"gpu_check: round_ok={'true' if round_ok else 'false'} gen_speedup={speedup:.2f} train_mfu={mfu:.2f}",
          flush=True)
    return 0 if round_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
