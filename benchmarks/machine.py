"""The machine's compute limit, measured in the benchmark's own run, and the model math to compare.

``flop_util`` in the benchmarks is (model FLOPs done per second) / (what a large fp32 matrix product
reaches on this machine, with the same thread count, measured just before). The limit is measured,
not taken from a data sheet: on this project's AMD EPYC (AVX2 + FMA, no AVX-512) the nominal peak is
about 96 GFLOP/s per core, and a 1024-2048 square ``torch.mm`` gets most of it; the number printed is
what this run saw, so a busy or throttled machine lowers both sides of the ratio.

Model FLOPs count the matrix products a decoder layer must do (Kaplan et al. 2020, sec. 2.1,
C_forward = 2 N + 2 n_layer n_ctx d_attn): 2 multiply-adds per weight per token for every linear map
(attention projections, MLP, the LM head; embeddings are a lookup) plus the attention scores and the
weighted sum, 2 * 2 * n_layer * context * d_model per token. Backward is twice the forward.
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The best of ``reps`` timings of one n x n x n fp32 ``torch.mm`` at torch's current thread
    count, in GFLOP/s (2 n^3 floating-point operations each)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up: page in the buffers, pick the kernel
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def linear_params(config) -> int:
    """Weights that take part in a matrix product per token: every layer's q, k, v, o and MLP
    projections and the LM head (tied or not, it is a product). Llama-style configs (SmolLM2,
    Qwen2, Llama) name the sizes the same way."""
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    attn = d * heads * head_dim * 2 + d * kv * head_dim * 2  # q, o; k, v
    mlp = 3 * d * ff  # gate, up, down (SwiGLU)
    return layers * (attn + mlp) + d * config.vocab_size


def forward_flops_per_token(config, context: float) -> float:
    """Forward FLOPs of one token that attends to ``context`` positions (itself included)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = 2 * 2 * config.num_hidden_layers * context * heads * head_dim  # scores, weighted sum
    return 2 * linear_params(config) + attention
