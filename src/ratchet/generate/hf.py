"""``HFSampler``: k completions per prompt with transformers' ``generate``.

The simple, always-available sampler. Prompts are sorted by length and batched so padding is
small; each batch holds ``batch_size // k`` prompts expanded to k sequences. Deterministic: the
random generator is re-seeded from (seed, batch index) before each batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from ratchet.generate.base import Messages, Sample, SamplingParams, encode_prompts
from ratchet.generate.stops import stop_token_ids


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` after the earliest stop string (kept); return (text, stopped)."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return (text[:min(ends)], True) if ends else (text, False)


class HFSampler:
    def __init__(self, model, tokenizer, *, batch_size: int = 64, max_context: int | None = None,
                 progress: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None)
        self.progress = progress
        self.stop_ids = stop_token_ids(tokenizer, model)  # EOS and end of turn: see generate.stops

    def _decode_one(self, ids: torch.Tensor, params: SamplingParams) -> Sample:
        ids = ids.tolist()
        end = next((n for n, token in enumerate(ids) if token in self.stop_ids), None)
        finish = "length"
        if end is not None:  # the rest is padding
            ids, finish = ids[:end], "eos"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, params.stop)
        if stopped:
            finish = "stop"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Sample(text=text, num_tokens=len(ids), finish_reason=finish)

    @torch.no_grad()
    def sample(self, prompts: Sequence[Messages], params: SamplingParams) -> list[list[Sample]]:
        encoded = encode_prompts(self.tokenizer, prompts, params.max_new_tokens, self.max_context)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        per_batch = max(1, self.batch_size // params.k)
        out: list[list[Sample]] = [[] for _ in prompts]
        pad = self.tokenizer.pad_token_id
        bar = tqdm(total=len(prompts), desc=self.progress if isinstance(self.progress, str) else "generate",
                   unit="prompt", disable=not self.progress)
        tokens = 0
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start:start + per_batch]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx])
            attention = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx])
            torch.manual_seed(params.seed * 1_000_003 + b)
            sampling = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0) \
                if params.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            generated = self.model.generate(
                input_ids=input_ids.to(self.model.device), attention_mask=attention.to(self.model.device),
                max_new_tokens=params.max_new_tokens, num_return_sequences=params.k, pad_token_id=pad,
                eos_token_id=list(self.stop_ids),
                stop_strings=list(params.stop) or None, tokenizer=self.tokenizer if params.stop else None,
                **sampling)[:, width:]
            for row, i in enumerate(idx):
                for j in range(params.k):
                    sample = self._decode_one(generated[row * params.k + j], params)
                    tokens += sample.num_tokens
                    out[i].append(sample)
            bar.update(len(idx))
            bar.set_postfix(tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}")
        bar.close()
        return out
