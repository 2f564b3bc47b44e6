"""Shared fixtures: a tiny random Llama and a byte-level tokenizer with a chat template.

Built locally from a config in a fraction of a second; nothing is downloaded, so the tests run
offline on one CPU. The tokenizer has 256 byte tokens plus the SmolLM2 special tokens and the
same chat template, so prompt formatting is exercised exactly as with the real model.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

STAND_INS = Path(__file__).resolve().parent / "stand_ins"
"""Stand-ins for optional packages this machine cannot run (``vllm``: no GPU), importable only from here."""

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(vocab_size: int, seed: int = 0, max_positions: int = 512):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from threads, and on a shared 2-core CPU two OpenMP threads can
    make them 100x slower (measured: 5.5 s against 0.03 s for one sampling call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A directory holding a tiny random Llama and its tokenizer, loadable by name like any model."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_model(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny(tiny_model_dir):
    from ratchet.models import load_model

    return load_model(str(tiny_model_dir))


class LengthJudge:
    """Prefers longer completions: a random model is never right, but pairs still need a winner."""

    def judge(self, prompt, completions):
        from ratchet.judge.base import Judgment

        return [Judgment(score=float(len(c)), correct=None) for c in completions]


@pytest.fixture
def stand_in_vllm(monkeypatch, tmp_path):
    """``import vllm`` gives ``tests/stand_ins/vllm`` for the test; the path of the log it writes
    (each engine built, call and shutdown). Forgotten afterwards, so a later test sees no vllm."""
    log = tmp_path / "vllm-log.jsonl"
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.setenv("RATCHET_STAND_IN_VLLM_LOG", str(log))
    yield log
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture
def length_judge(monkeypatch):
    """Registers ``LengthJudge`` as judge ``length`` for one test (the name ``tiny_run_overrides`` selects)."""
    from ratchet.judge import JUDGES

    monkeypatch.setitem(JUDGES, "length", LengthJudge)


def tiny_run_overrides(tmp_path, model_dir):
    """Config overrides for a small, fast run on the tiny model: few prompts, short samples, the length judge."""
    return [f"runs_dir={tmp_path / 'runs'}", "name=tiny", f"model={model_dir}", "task.train_prompts=4",
            "task.heldout_prompts=3", "generate.k=3", "generate.max_new_tokens=6", "generate.temperature=1.0",
            "evaluate.max_new_tokens=6", "train.batch_size=2", "train.max_length=400", "judge.name=length",
            "pair.strategy=best_vs_worst", "train.lr=1e-3",
            "pair.drop_truncated=false"]  # 6 tokens cut nearly every random-model sample


def tokenize_revision(row: dict, tokenizer, template=None, *, max_length: int) -> dict:
    """SRPO's six sequences of a pairs row tokenised, prompt masked, one by one from
    ``ratchet.data.revision.expand_revision``: a reference for ``ratchet.train.batches.prepare_pairs``,
    which builds them its own way. Each distinct prompt is templated once; a sequence that does not fit
    ``max_length`` is a ValueError naming the row and the sequence."""
    from ratchet.data.revision import expand_revision
    from ratchet.data.tokenize import prompt_ids, tokenize_completion

    prompts: dict[str, list[int]] = {}
    out = {}
    for name, seq in expand_revision(row, template).items():
        key = repr(seq.messages)
        if key not in prompts:
            prompts[key] = prompt_ids(tokenizer, seq.messages)
        try:
            out[name] = tokenize_completion(tokenizer, prompts[key], seq.text, complete=seq.complete,
                                            max_length=max_length)
        except ValueError as e:
            raise ValueError(f"pairs row {row.get('id', '?')!r}, sequence {name}: {e}") from None
    return out


@pytest.fixture
def scripted_accuracy(monkeypatch):
    """The held-out metric per evaluation, in call order, so the gate's decisions are known."""
    from ratchet.loop import stages

    script = []
    real = stages.evaluate

    def fake(model, tok, prompts, out_dir, cfg, judge_cfg, **kwargs):
        real(model, tok, prompts, out_dir, cfg, judge_cfg, **kwargs)
        m = json.loads((out_dir / "metrics.json").read_text())
        m[m["metric"]] = script.pop(0)
        (out_dir / "metrics.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(stages, "evaluate", fake)
    return script


class HashJudge:
    """Correct iff the md5 of ``key(prompt)`` and the answer is even: about half right. The tiny
    random model's greedy answers are all alike, so the key (the prompt's id plus what should change
    the verdict: the revision step, the number of turns) is what tells its evaluations apart."""

    def __init__(self, key):
        self.key = key

    def judge(self, prompt, completions):
        from ratchet.judge.base import Judgment

        key = self.key(prompt)
        even = [int(hashlib.md5((key + c).encode()).hexdigest(), 16) % 2 == 0 for c in completions]
        return [Judgment(score=float(ok), correct=ok) for ok in even]


def read_lines(path):
    """The rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def eval_outcomes(eval_dir):
    """Problem id -> the held-out answer's verdict, from an evaluation's judgments.jsonl."""
    return {j["id"]: j["correct"][0] for j in read_lines(eval_dir / "judgments.jsonl")}
