"""``LeanStep``: one decode step of a Llama-family model as plain tensor math on ``CachedSampler``'s cache.

This module owns the fast path of ratchet's decode loop. A decode step of SmolLM2-135M through
transformers' module stack, 64 rows, one thread, spent 20% of its time outside the matrix products
and attention (profiled; ``docs/generation.md``): per-layer mask handling, ``repeat_kv`` copying the
keys and values of every layer three times for grouped-query attention (transformers' SDPA path
does so whenever a mask is given on CPU), and about 40 small operators per layer. This step does
the same math with:

- each layer's q, k, v projections fused into one matrix product, gate and up into another, and
  every weight stored transposed and contiguous ([in, out]): on this CPU (MKL, one thread, 64 rows)
  ``x @ W_t`` ran 1.2x to 1.5x faster than ``F.linear(x, W)`` for the model's shapes (measured);
- grouped-query attention on the cache as it is: the query heads of one key/value head form the
  rows of one small matrix product (Ainslie et al. 2023, GQA), so keys and values are read once;
- the attention mask turned into an additive bias once per step, not once per layer;
- prefill of prompts packed end to end (no padding computed).

A row's logits are the same bits whichever rows share its steps and its prefill (a lone row runs
as two, prompts are not padded; ``_residual``, ``LeanStep.prefill``), so a stage split over
workers samples exactly what one process samples (``docs/scaling.md``, "Exact").

It reuses the model's own RMSNorm, rotary embedding and activation modules, so their math is the
model's. Models it does not know (another architecture, a PEFT wrapper, quantized or hooked
modules) get a reason from ``why_not_lean``, and the sampler runs the model's own forward.
"""

from __future__ import annotations

import itertools

import torch
from transformers import DynamicCache

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM")


def why_not_lean(model) -> str | None:
    """Why ``model`` must run its own forward, or None when the lean step computes the same thing."""
    name = type(model).__name__
    if name not in SUPPORTED:
        return f"{name} is not one of {SUPPORTED}"
    config = model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return "sliding-window layers"
    if model.training and getattr(config, "attention_dropout", 0):
        return "attention dropout in training mode"
    modules = list(model.modules())
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return "forward hooks (they expect the model's forward to run)"
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if any(type(m) is not torch.nn.Linear for m in linears):
            return "projections that are not plain nn.Linear (adapters, quantization)"
    if type(model.lm_head) is not torch.nn.Linear or type(model.model.embed_tokens) is not torch.nn.Embedding:
        return "a head or embedding that is not plain"
    return None


def _packed(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The linears' weights side by side, transposed and contiguous [in, sum of outs], and their
    biases (zeros for a linear without one), or None when none has a bias."""
    weight = torch.cat([m.weight.detach() for m in linears]).t().contiguous()
    if all(m.bias is None for m in linears):
        return weight, None
    bias = torch.cat([m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features)
                      for m in linears])
    return weight, bias


def _matmul(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    if len(x) == 1:  # see _residual
        return _matmul(x.repeat(2, 1), packed)[:1]
    weight, bias = packed
    return x @ weight if bias is None else torch.addmm(bias, x, weight)


def _residual(h: torch.Tensor, x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """h + x @ W (+ b): the residual added inside the matrix product (GEMM's C + A B), no extra pass.

    A lone row runs as two: BLAS takes a matrix-vector path for one row, whose sums are ordered
    otherwise than its matrix-matrix kernel's, and that kernel gives a row the same bits whatever
    the number of rows >= 2 (measured: MKL, one thread, every product of SmolLM2-135M, 2 to 3,000 rows).
    So a row's result does not depend on how many rows share its step (``docs/scaling.md``)."""
    if len(x) == 1:
        return _residual(h.repeat(2, 1), x.repeat(2, 1), packed)[:1]
    weight, bias = packed
    out = torch.addmm(h, x, weight)
    return out if bias is None else out.add_(bias)


def _norm(module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm (Llama, Qwen2: weight * x / sqrt(mean(x^2) + eps)) as one fused operator."""
    return torch.nn.functional.rms_norm(x, x.shape[-1:], module.weight, module.variance_epsilon)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) as transformers' Llama applies it (rotate_half)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class LeanStep:
    """The packed weights of one model and its decode step. The packing is a copy of the projection
    weights (as much memory as the model's linear layers), made by ``pack`` at the start of every
    ``sample`` call: weights may change between calls (on-policy training samples, steps, samples
    again), and no cheap test tells: a fused optimizer step leaves a parameter's ``_version`` as it
    was (measured: ``torch.optim.AdamW(fused=True)``, what the trainer uses), so a version check
    sampled from stale weights. Packing SmolLM2-135M costs a copy of its linear weights."""

    def __init__(self, model):
        self.model = model
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers: list[dict] = []

    def pack(self) -> None:
        """Copy the model's current weights into the fused, transposed layout the step reads."""
        self.layers = []
        for layer in self.model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(dict(qkv=_packed([attn.q_proj, attn.k_proj, attn.v_proj]), o=_packed([attn.o_proj]),
                                    gate_up=_packed([mlp.gate_proj, mlp.up_proj]), down=_packed([mlp.down_proj]),
                                    scale=attn.scaling))
        self.head = _packed([self.model.lm_head])

    def _stack(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        """The decoder layers and final norm over tokens ``h`` [n, hidden], with rotary ``cos``/``sin``
        [n, 1, head dim]; ``attend(layer index, q [n, heads, dim], k, v [n, kv heads, dim], scale)``
        returns the attention output [n, heads x dim] (and stores k, v in its cache)."""
        n, heads, kv_heads, dim = len(h), self.heads, self.kv_heads, self.head_dim
        qk_size = (heads + kv_heads) * dim
        for i, (layer, w) in enumerate(zip(self.model.model.layers, self.layers)):
            qkv = _matmul(_norm(layer.input_layernorm, h), w["qkv"])
            qk = _rotate(qkv[:, :qk_size].view(n, heads + kv_heads, dim), cos, sin)  # q and k at once
            attended = attend(i, qk[:, :heads], qk[:, heads:], qkv[:, qk_size:].view(n, kv_heads, dim), w["scale"])
            h = _residual(h, attended, w["o"])
            gate, up = _matmul(_norm(layer.post_attention_layernorm, h), w["gate_up"]).chunk(2, dim=-1)
            h = _residual(h, layer.mlp.act_fn(gate).mul_(up), w["down"])
        return _norm(self.model.model.norm, h)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """Logits [rows, vocab] of one new token per row. ``tokens``, ``positions``: [rows];
        ``mask``: [rows, window] over the cache window with the new token's column last (1: attend);
        ``cache``: a ``SlotCache``, each layer's ``update`` appending the new keys and values."""
        core = self.model.model
        rows, heads, kv_heads, dim = len(tokens), self.heads, self.kv_heads, self.head_dim
        h = core.embed_tokens(tokens)
        cos, sin = core.rotary_emb(h, positions[:, None])  # [rows, 1, dim]: broadcast over heads
        # One additive bias per step (0 or the dtype's minimum, as transformers builds its masks).
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill_(mask == 0, torch.finfo(h.dtype).min)
        bias = bias[:, None, None, :]  # [rows, 1, 1, window]: every head and query of a row

        def attend(i, q, k, v, scale):
            keys, values = cache.layers[i].update(k[:, :, None], v[:, :, None])  # [rows, kv heads, window, dim]
            # The heads sharing a key/value head are the rows of one product: [rows, kv heads, group, window].
            scores = torch.matmul(q.reshape(rows, kv_heads, heads // kv_heads, dim), keys.transpose(-1, -2))
            probs = torch.softmax(scores.mul_(scale).add_(bias), dim=-1, dtype=torch.float32).to(q.dtype)
            return torch.matmul(probs, values).view(rows, heads * dim)

        return _matmul(self._stack(h, cos, sin, attend), self.head)

    def prefill(self, prompts: list[list[int]]):
        """Prompts (token ids): a ``DynamicCache`` of their keys and values, left-padded with zeros to
        the longest, and each prompt's last-position logits [prompts, vocab].

        The prompts' tokens are packed end to end, without padding: the matrix products run on all
        of them at once, attention on each prompt alone. A prompt's keys, values and logits are then
        the same bits whichever prompts it is prefilled with (a row of a product does not depend on
        the other rows, see ``_residual``; in a padded batch its attention sums would run over the
        padding, ordered by its width): one of the two conditions for a sharded stage to sample what
        one process samples (``docs/scaling.md``). Packing also computes no padding."""
        device = self.model.device
        core, heads, kv_heads, dim = self.model.model, self.heads, self.kv_heads, self.head_dim
        width, ends = max(map(len, prompts)), list(itertools.accumulate(map(len, prompts)))
        spans = list(zip([0] + ends[:-1], ends))
        h = core.embed_tokens(torch.tensor([t for ids in prompts for t in ids], device=device))
        positions = torch.cat([torch.arange(end - start, device=device) for start, end in spans])
        cos, sin = core.rotary_emb(h, positions[:, None])
        cache = DynamicCache(config=self.model.config)

        def attend(i, q, k, v, scale):
            outs, keys, values = [], [], []
            for start, end in spans:
                # [1, heads, length, dim]
                pq, pk, pv = (x[start:end].transpose(0, 1)[None] for x in (q, k, v))
                out = torch.nn.functional.scaled_dot_product_attention(pq, pk, pv, is_causal=True, scale=scale,
                                                                       enable_gqa=heads != kv_heads)
                outs.append(out[0].transpose(0, 1).reshape(end - start, heads * dim))
                pad = (0, 0, width - (end - start), 0)  # zeros before the prompt: its row of the padded cache
                keys.append(torch.nn.functional.pad(pk, pad))
                values.append(torch.nn.functional.pad(pv, pad))
            cache.update(torch.cat(keys), torch.cat(values), i)
            return torch.cat(outs)

        last = self._stack(h, cos, sin, attend)[torch.tensor(ends, device=device) - 1]
        return cache, _matmul(last, self.head)
