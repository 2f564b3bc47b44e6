"""``CachedSampler``: k completions per prompt from one prefill, with a decode loop of its own.

This module owns ratchet's transformers decode loop, the sampler a self-improvement round uses on
CPU. Compared with ``model.generate(num_return_sequences=k)`` (``HFSampler``), it:

- prefills each prompt once and copies its KV cache to its k rows (``generate`` prefills k times);
- keeps the KV cache in one preallocated buffer, so appending a token writes in place
  (``DynamicCache`` concatenates the whole cache every step: 37% of a 64-row decode step of
  SmolLM2-135M on CPU);
- drops finished rows at once, and admits the next samples into the freed rows, one row each
  (prompts are prefilled in length order, a batch's worth at a time, ``ceil(batch_size / k)``,
  when the first of them is needed, and their caches wait for their samples' turn: a prefill's
  cost per prompt falls with the prompts it takes, docs/generation.md), so every step runs
  ``batch_size`` live rows until the queue is empty (``generate``
  runs every row of a batch until its longest finishes, and a decode step's fixed cost, reading
  all weights, is paid per step);
- checks stop strings on the decoded tail of each row only;
- runs Llama-family models through ``generate.lean`` (the same math without transformers' module
  stack), other models through their own forward.

Layout: all rows share one timeline of cache positions. A prompt admitted when the timeline ends
at position ``end`` occupies [end - len, end); earlier positions of its row are masked out. The
attention mask, not position ids, separates rows, so each row's position ids are its own.

Randomness: each completion draws from its own generator seeded from (seed, prompt index, sample
index), one uniform number per token (inverse-CDF sampling), so its random stream does not depend
on ``batch_size`` or on which prompts share its steps. It knows nothing of judging or training.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from ratchet.generate.base import Messages, Sample, SamplingParams, encode_prompts
from ratchet.generate.hf import cut_at_stop
from ratchet.generate.lean import LeanStep, why_not_lean
from ratchet.generate.stops import stop_token_ids


def cache_argument(model) -> str:
    """The name ``model.forward`` takes its KV cache under: ``cache`` from transformers 5.24
    (``past_key_values`` is deprecated there and goes in 5.40), ``past_key_values`` before. A PEFT
    wrapper's forward takes ``**kwargs`` and passes them on, so its base model's forward decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class SlotLayer(DynamicLayer):
    """One full-attention layer's keys and values in a buffer [rows, kv heads, capacity, head dim].

    ``keys``/``values`` are views of the ``used`` rows over timeline positions [start, end), so the
    model sees an ordinary ``DynamicLayer``; appending a token writes into the buffer in place.
    """

    def __init__(self, like: torch.Tensor, rows: int, capacity: int, origin: int):
        super().__init__()
        _, heads, _, dim = like.shape
        self.dtype, self.device, self.is_initialized = like.dtype, like.device, True
        # Not zero-filled (0.9 s for 64 rows of SmolLM2 here): ``admit`` zeroes what enters the window
        # unwritten, since masked positions still enter attention with weight 0, and 0 * NaN = NaN.
        self._k = like.new_empty(rows, heads, capacity, dim)
        self._v = like.new_empty(rows, heads, capacity, dim)
        self.used, self.start, self.end = 0, origin, origin
        self._view()

    def _view(self) -> None:
        self.keys = self._k[:self.used, :, self.start:self.end]
        self.values = self._v[:self.used, :, self.start:self.end]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        self._k[:self.used, :, self.end:self.end + new] = key_states
        self._v[:self.used, :, self.end:self.end + new] = value_states
        self.end += new
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.end - self.start

    def admit(self, keys: torch.Tensor, values: torch.Tensor, repeats: int = 1,
              index: torch.Tensor | None = None) -> None:
        """Append ``repeats`` rows per prompt of a prefill cache (or its rows ``index``, in that
        order), its last position at ``end - 1``."""
        keys, values = (x.repeat_interleave(repeats, 0) if index is None else x[index] for x in (keys, values))
        rows, width = keys.shape[0], keys.shape[2]
        start, new = min(self.start, self.end - width), slice(self.used, self.used + rows)
        for buffer, x in ((self._k, keys), (self._v, values)):
            buffer[:self.used, :, start:self.start] = 0  # the window grows to the front for the rows there
            buffer[new, :, start:self.end - width] = 0  # the new rows' columns before their prompt
            buffer[new, :, self.end - width:self.end] = x
        self.used, self.start = self.used + rows, start
        self._view()

    def move_rows(self, sources: torch.Tensor, targets: torch.Tensor, used: int) -> None:
        """Copy rows ``sources`` into ``targets``, then keep the first ``used`` rows."""
        if len(sources):
            self._k[targets, :, self.start:self.end] = self._k[sources, :, self.start:self.end]
            self._v[targets, :, self.start:self.end] = self._v[sources, :, self.start:self.end]
        self.used = used
        self._view()

    def shift(self, start: int, end: int) -> None:
        """Move the window to [start, end) (same length); only the used rows are copied."""
        if start != self.start:
            width = self.end - self.start
            self._k[:self.used, :, start:start + width] = self._k[:self.used, :, self.start:self.end].clone()
            self._v[:self.used, :, start:start + width] = self._v[:self.used, :, self.start:self.end].clone()
        self.start, self.end = start, end
        self._view()


class SlotCache(Cache):
    """The decode batch's cache: one ``SlotLayer`` per model layer, all on the same timeline."""

    def __init__(self, prefilled: DynamicCache, rows: int, capacity: int, origin: int):
        if any(type(layer) is not DynamicLayer for layer in prefilled.layers):
            kinds = sorted({type(layer).__name__ for layer in prefilled.layers})
            raise NotImplementedError(f"CachedSampler supports full-attention layers only, this model's cache has "
                                      f"{kinds}; use HFSampler for it")
        super().__init__(layers=[SlotLayer(layer.keys, rows, capacity, origin) for layer in prefilled.layers])
        self.capacity, self.origin = capacity, origin

    @property
    def used(self) -> int:
        return self.layers[0].used

    @property
    def window(self) -> tuple[int, int]:
        return self.layers[0].start, self.layers[0].end

    def admit(self, prefilled: DynamicCache, repeats: int = 1, index: torch.Tensor | None = None) -> None:
        for layer, new in zip(self.layers, prefilled.layers):
            layer.admit(new.keys, new.values, repeats, index)

    def move_rows(self, sources: list[int], targets: list[int], used: int) -> None:
        device = self.layers[0].device
        src = torch.tensor(sources, dtype=torch.long, device=device)
        dst = torch.tensor(targets, dtype=torch.long, device=device)
        for layer in self.layers:
            layer.move_rows(src, dst, used)

    def crop_front(self, columns: int) -> None:
        """Forget the first ``columns`` positions of the window (masked out in every row)."""
        for layer in self.layers:
            layer.start += columns
            layer._view()

    def make_room(self) -> None:
        """Before appending at the buffer's end: move the window back to the buffer's start, keeping
        ``end >= origin`` (the longest prompt), so any prompt can still be admitted before ``end``."""
        start, end = self.window
        if end < self.capacity:
            return
        offset = min(start, end - self.origin)
        if offset <= 0:
            raise RuntimeError("KV buffer full; this is a bug in the engine's capacity")
        for layer in self.layers:
            layer.shift(start - offset, end - offset)


def drop_rows(cache: SlotCache, done: list[bool]) -> list[int]:
    """Remove finished rows; return the new row order (new row r holds old row ``order[r]``).

    Active rows from the end move into the holes left before them, so only they are copied."""
    keep = len(done) - sum(done)
    holes = [r for r in range(keep) if done[r]]
    movers = [r for r in range(keep, len(done)) if not done[r]]
    order = list(range(keep))
    for hole, mover in zip(holes, movers):
        order[hole] = mover
    cache.move_rows(movers, holes, keep)
    return order


def _generator(seed: int, prompt: int, sample: int) -> torch.Generator:
    # A hash, not arithmetic on the numbers: no two (seed, prompt, sample) share a stream.
    digest = hashlib.sha256(f"ratchet/{seed}/{prompt}/{sample}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _nucleus(probs: torch.Tensor, top_p: float, candidates: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities sorted in descending order with the tail beyond mass ``top_p`` zeroed, and the order.

    The nucleus is usually a few tokens: sort only the top ``candidates`` when they already hold
    ``top_p`` in every row (then the result equals a full sort's), else the whole vocabulary."""
    top, order = probs.topk(min(candidates, probs.shape[-1]), dim=-1)
    cum = top.cumsum(-1)
    if top.shape[-1] < probs.shape[-1] and not bool((cum[:, -1] >= top_p).all()):
        top, order = probs.sort(dim=-1, descending=True)
        cum = top.cumsum(-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    return top * ((cum - top) < top_p), order


BLOCK = 256
"""Tokens per block of ``invert_cdf``'s first level."""


def sample_tokens(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator],
                  work: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of ``logits`` [rows, vocab]: greedy, or temperature + top-p.

    Sampling inverts the cumulative distribution at one uniform number per row, drawn from that
    row's own generator, so a row's token never depends on the other rows' randomness. Without
    top-p it inverts softmax's numerator, unnormalised (``softmax_numerator``, in ``work`` when
    given): no vocabulary-wide tensor is allocated per step (measured in docs/generation.md)."""
    if params.temperature == 0:
        return logits.argmax(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(logits.device)
    if params.top_p >= 1:
        return invert_cdf(softmax_numerator(logits, params.temperature, work), u)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1, dtype=torch.float32)
    probs, order = _nucleus(probs, params.top_p)
    return order.gather(-1, invert_cdf(probs, u)[:, None]).squeeze(-1)


def softmax_numerator(logits: torch.Tensor, temperature: float, work: torch.Tensor | None = None) -> torch.Tensor:
    """exp(x - max x) per row, x = logits / temperature, in float32: softmax without its normalising
    division (``invert_cdf`` scales by the row's total instead). Written into the first rows of
    ``work`` [rows, columns >= vocab] when given, whose columns past the vocabulary must be zero (a
    width that is a multiple of ``BLOCK`` spares ``invert_cdf`` its padding copy); those rows are
    returned. Elementwise operations and a maximum per row: a row's weights are the same bits
    whatever the number of rows (tested), as the sharded stages need (docs/scaling.md, "Exact")."""
    rows, vocab = logits.shape
    out = logits.new_empty(rows, vocab, dtype=torch.float32) if work is None else work[:rows]
    x = out[:, :vocab]
    torch.div(logits.float(), temperature, out=x)
    x.sub_(x.amax(-1, keepdim=True)).exp_()
    return out


def weights_buffer(rows: int, vocab: int, device) -> torch.Tensor:
    """A zeroed float32 ``work`` buffer for ``sample_tokens``: ``rows`` x vocab rounded up to ``BLOCK``."""
    return torch.zeros(rows, -(-vocab // BLOCK) * BLOCK, dtype=torch.float32, device=device)


def invert_cdf(probs: torch.Tensor, u: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Per row, the index i with cdf[i - 1] <= u * total < cdf[i], where cdf sums ``probs`` [rows, n].

    In float64, so rare tokens keep their share (a float32 cumsum near 1 moves each token's share
    by up to ~3e-8, more than a rare token's whole probability), and in two levels, blocks then
    tokens within the chosen block: 7x faster here than a float64 cumsum over the vocabulary.
    ``probs`` need not sum to 1 (the target is ``u`` times the row's total). Zero-probability
    tokens are never chosen."""
    rows, n = probs.shape
    padded = torch.nn.functional.pad(probs, (0, -n % block)) if n % block else probs  # pad copies: only if needed
    blocks = padded.reshape(rows, -1, block)
    sums = blocks.sum(-1, dtype=torch.float64)
    block_cdf = sums.cumsum(-1)
    target = u * block_cdf[:, -1]
    b = torch.searchsorted(block_cdf, target[:, None], right=True).clamp_(max=blocks.shape[1] - 1)
    target = (target - (block_cdf.gather(1, b) - sums.gather(1, b)).squeeze(-1)).clamp_(min=0)  # minus mass before b
    within = blocks.gather(1, b[:, :, None].expand(rows, 1, block)).squeeze(1).double().cumsum(-1)
    j = torch.searchsorted(within, target[:, None], right=True)
    # Rounding can put the target at the block's very end: take the block's last nonzero token.
    j = torch.minimum(j, (within < within[:, -1:]).sum(-1, keepdim=True))
    return (b * block + j).squeeze(-1)


class _Progress:
    """A bar over prompts (one step when all k samples of a prompt are done), with tokens/s."""

    def __init__(self, prompts: int, k: int, enabled: bool | str):
        # a string names the bar ("sampling", "evaluating"): the loop shows which stage it is
        self.bar = tqdm(total=prompts, desc=enabled if isinstance(enabled, str) else "generate", unit="prompt",
                        disable=not enabled)
        self.left = [k] * prompts
        self.tokens = 0

    def finished(self, prompt: int) -> None:
        self.left[prompt] -= 1
        if self.left[prompt] == 0:
            self.bar.update(1)

    def generated(self, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(self.bar.format_dict["elapsed"], 1e-9)
        self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class _Batch:
    """The rows being decoded: cache, attention mask over the cache window, next position ids,
    next-token logits (from the last forward or admission until they are sampled), and per row its
    (prompt, sample) pair, generator and tokens so far."""

    def __init__(self, rows: int, capacity: int, origin: int, k: int, seed: int, first_index: int = 0):
        self.rows, self.capacity, self.origin, self.k, self.seed = rows, capacity, origin, k, seed
        self.first_index = first_index  # prompt i is seeded as prompt first_index + i (a shard of a stage)
        self.cache: SlotCache | None = None
        self.mask = self.positions = self.logits = None
        self.work: torch.Tensor | None = None  # sample_tokens' buffer, made at the first admission
        self.seqs: list[tuple[int, int]] = []
        self.generators: list[torch.Generator] = []
        self.tokens: list[list[int]] = []
        self.decoded, self.contexts = 0, torch.zeros((), dtype=torch.long)  # rows run, sum of their contexts

    def __len__(self) -> int:
        return len(self.seqs)

    def admit(self, rows: list[tuple[int, int, int]], prefilled: DynamicCache, prompt_mask: torch.Tensor,
              logits: torch.Tensor):
        """Add rows (prefill row, prompt, sample) of a prefill (its cache, left-padding mask and last logits)."""
        if self.cache is None:
            self.cache = SlotCache(prefilled, self.rows, self.capacity, self.origin)
            self.mask = prompt_mask.new_zeros(0, 0)
            self.positions, self.logits = prompt_mask.new_zeros(0), logits.new_zeros(0, logits.shape[-1])
            self.work = weights_buffer(self.rows, logits.shape[-1], logits.device)
        index = torch.tensor([r for r, _, _ in rows], dtype=torch.long, device=logits.device)
        old_start, end = self.cache.window
        self.cache.admit(prefilled, index=index)
        start, width = self.cache.window[0], end - self.cache.window[0]
        new_mask = prompt_mask.new_zeros(len(rows), width)
        new_mask[:, width - prompt_mask.shape[1]:] = prompt_mask[index]
        old_mask = torch.nn.functional.pad(self.mask, (old_start - start, 0))
        self.mask = torch.cat([old_mask, new_mask])
        self.positions = torch.cat([self.positions, prompt_mask.sum(1)[index]])
        self.logits = torch.cat([self.logits, logits[index]])
        self.seqs += [(i, j) for _, i, j in rows]
        self.generators += [_generator(self.seed, self.first_index + i, j) for _, i, j in rows]
        self.tokens += [[] for _ in rows]

    def drop(self, done: list[bool]) -> list[int]:
        """Remove finished rows; return the order of the rows kept (see ``drop_rows``)."""
        order = drop_rows(self.cache, done)
        keep = torch.tensor(order, dtype=torch.long, device=self.mask.device)
        self.mask, self.positions = self.mask[keep], self.positions[keep]
        # The logits were sampled from: the next forward replaces them before they are read (it runs
        # whenever rows are left), so they are not copied (a vocabulary-wide gather per step).
        self.logits = self.logits[:0]
        self.seqs = [self.seqs[r] for r in order]
        self.generators = [self.generators[r] for r in order]
        self.tokens = [self.tokens[r] for r in order]
        # Window columns masked out in every remaining row are never attended again: forget them.
        live = self.mask.any(0)
        unused = int(live.to(torch.int8).argmax()) if bool(live.any()) else self.mask.shape[1]
        if unused:
            self.cache.crop_front(unused)
            self.mask = self.mask[:, unused:]
        return order

    def forward(self, model, tokens: torch.Tensor, cache_kw: str, lean: LeanStep | None = None) -> None:
        """Run the rows' new tokens through the model (its lean step where there is one); keep the
        logits for the next token."""
        self.cache.make_room()
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        if lean is not None:
            self.logits = lean(tokens, self.positions, self.mask, self.cache)
        else:
            self.logits = model(input_ids=tokens[:, None], attention_mask=self.mask,
                                position_ids=self.positions[:, None], **{cache_kw: self.cache},
                                use_cache=True).logits[:, -1]
        # A row's new token attends to its own positions 0..p: context p + 1 (summed without a host sync).
        self.decoded, self.contexts = self.decoded + len(tokens), self.contexts + self.positions.sum() + len(tokens)
        self.positions = self.positions + 1


@dataclass
class Work:
    """What one ``sample`` call ran through the model, for FLOP counts (``benchmarks/machine.py``):
    ``positions`` (prompt tokens prefilled, without padding, plus rows decoded) and their mean
    context (positions each one attends to, itself included)."""

    positions: int = 0
    mean_context: float = 0.0


class CachedSampler:
    """k completions per prompt: one prefill per prompt, in-place KV cache, rows refilled as they finish.

    ``batch_size`` counts sequences decoded together (at least k). Prompts are taken in length
    order, as many as the free rows need, prefilled together; each free row takes one sample.
    ``max_context`` defaults to the model's ``max_position_embeddings``. Full-attention models only
    (no sliding-window layers). ``lean=False`` runs every step through the model's own forward.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 64, max_context: int | None = None,
                 progress: bool = True, lean: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.cache_kw = cache_argument(model)  # once here: not a signature lookup per decode step
        self.lean = lean  # False: every decode step through the model's own forward
        self._lean_step: LeanStep | None = None
        self.work = Work()  # of the last ``sample`` call
        self.batch_size = batch_size
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None)
        self.progress = progress
        self.stop_ids = frozenset(stop_token_ids(tokenizer, model))  # EOS and end of turn: see generate.stops
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def sample(self, prompts: Sequence[Messages], params: SamplingParams, first_index: int = 0) -> list[list[Sample]]:
        """Return, for each prompt in order, ``params.k`` samples. ``first_index``: the place of
        ``prompts[0]`` in a larger call split across workers; completion j of prompt i draws from
        the generator of (seed, first_index + i, j), so the shards together give the whole's samples."""
        encoded = encode_prompts(self.tokenizer, prompts, params.max_new_tokens, self.max_context)
        self.work = Work()
        if not encoded:
            return []
        k, longest = params.k, max(len(ids) for ids in encoded)
        rows = max(self.batch_size, k)
        # Timeline: prompts end at or after `longest`; with 2 x max_new_tokens of room the window
        # (at most longest + max_new_tokens) always fits after make_room.
        batch = _Batch(rows, longest + 2 * params.max_new_tokens, longest, k, params.seed, first_index)
        queue = deque(sorted(range(len(encoded)), key=lambda i: len(encoded[i])))  # little padding
        out: list[list[Sample]] = [[None] * k for _ in prompts]
        bar = _Progress(len(prompts), k, self.progress)
        lean = self._lean()
        pending: deque[tuple[int, int, int]] = deque()  # (prefill row, prompt, sample) not admitted yet
        with torch.inference_mode():
            while queue or pending or len(batch):
                while len(batch) < rows and (queue or pending):
                    if not pending:  # prefill a batch's worth of prompts; their k samples wait their turn
                        group = [queue.popleft() for _ in range(min(-(-rows // k), len(queue)))]
                        prefilled = self._prefill([encoded[i] for i in group], lean)
                        pending = deque((r, i, j) for r, i in enumerate(group) for j in range(k))
                    batch.admit([pending.popleft() for _ in range(min(rows - len(batch), len(pending)))], *prefilled)
                tokens = sample_tokens(batch.logits, params, batch.generators, batch.work)
                done = self._advance(batch, tokens.tolist(), params, out, bar)
                if any(done):
                    tokens = tokens[torch.tensor(batch.drop(done), dtype=torch.long, device=tokens.device)]
                if len(batch):
                    batch.forward(self.model, tokens, self.cache_kw, lean)
        bar.close()
        prompt_contexts = sum(len(ids) * (len(ids) + 1) // 2 for ids in encoded)  # 1 + 2 + ... + len
        positions = sum(map(len, encoded)) + batch.decoded
        self.work = Work(positions, (prompt_contexts + int(batch.contexts)) / positions)
        return out

    def _lean(self) -> LeanStep | None:
        """The model's lean decode step (``generate.lean``), or None where its own forward must run;
        asked at each ``sample``, since hooks or adapters may have come or gone since."""
        if not self.lean or why_not_lean(self.model) is not None:
            return None
        if self._lean_step is None:
            self._lean_step = LeanStep(self.model)
        self._lean_step.pack()  # this call's weights (they may have been trained since the last one)
        return self._lean_step

    def _prefill(self, prompts: list[list[int]],
                 lean: LeanStep | None) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Forward over the prompts: the lean step's packed prefill where there is one, else the model's on a
        left-padded batch; returns their cache (left-padded), padding mask, last logits."""
        width = max(len(ids) for ids in prompts)
        device = self.model.device
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        if lean is not None:
            cache, logits = lean.prefill(prompts)
            return cache, mask, logits
        input_ids = torch.tensor([[self.pad] * (width - len(ids)) + ids for ids in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache(config=self.model.config)
        # logits_to_keep=1: the LM head (vocab x hidden) runs on the last position only.
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            **{self.cache_kw: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]
        return cache, mask, logits

    def _advance(self, batch: _Batch, tokens: list[int], params: SamplingParams,
                 out: list[list[Sample]], bar: _Progress) -> list[bool]:
        """Append each row's new token; finish rows on a stop token (reason "eos", the token not
        kept), a stop string or the length cap."""
        reasons: list[str | None] = []
        for seq, token in zip(batch.tokens, tokens):
            if token in self.stop_ids:
                reasons.append("eos")
            else:
                seq.append(token)
                reasons.append("length" if len(seq) >= params.max_new_tokens else None)
        if params.stop:
            # A stop string of b bytes spans at most b tokens, the newest among them (it was not
            # there one token ago), so decoding that many last tokens finds it.
            tail = max(len(s.encode()) for s in params.stop)
            check = [r for r, reason in enumerate(reasons) if reason != "eos"]
            texts = self.tokenizer.batch_decode([batch.tokens[r][-tail:] for r in check], skip_special_tokens=True)
            for r, text in zip(check, texts):
                if any(s in text for s in params.stop):
                    reasons[r] = "stop"
        for (i, j), seq, reason in zip(batch.seqs, batch.tokens, reasons):
            if reason is not None:
                out[i][j] = self._to_sample(seq, reason, params.stop)
                bar.finished(i)
        bar.generated(len(tokens))
        return [reason is not None for reason in reasons]

    def _to_sample(self, ids: list[int], reason: str, stop: Sequence[str]) -> Sample:
        """Decode, cut after the first stop string (kept), count the tokens kept (as ``HFSampler``)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stop)
        if stopped:
            return Sample(text=text, num_tokens=len(self.tokenizer(text, add_special_tokens=False)["input_ids"]),
                          finish_reason="stop")
        return Sample(text=text, num_tokens=len(ids), finish_reason=reason)
