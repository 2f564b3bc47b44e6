"""Sequence log-probabilities of completions: the single place for shift, mask and sum conventions.

Logits are never materialised over the prompt nor as a full ``[B, T, V]`` tensor: the decoder
runs to hidden states, only the positions that predict completion tokens are kept, and the LM
head is applied to those in chunks, each chunk recomputed in backward (so the saved activations
are ``[N, H]`` hidden states, not ``[N, V]`` logits; with V = 49,152 and H = 576 for SmolLM2
that is an 85x smaller saved tensor). A single chunk keeps its logits instead of recomputing them.

Two entry points:

- ``completion_logps``: right-padded ``[B, T]`` sequences with a completion mask (one
  sequence per row; position t predicts token t + 1).
- ``packed_logps``: rows that hold several sequences sharing their prefixes (a prompt computed
  once for all its completions: a prefix tree laid out depth first), described by explicit
  position ids (each token's position in its own sequences), an attention mask (2D, or 4D when
  tokens in a row must see only their own sequence's earlier tokens) and, for every scored
  token, the flat index of the hidden state that predicts it and the output slot it is summed
  into. ``train.batches.pack`` builds these; this module knows nothing of pairs. Transformers
  passes a 4D mask to the attention as is (``masking_utils``: a 4D mask is "already prepared"),
  so the layers see the tree and nothing else.

Two savings that change no number beyond float summation order (tested; docs/training.md,
session 12): a trained embedding tied to the LM head gets a sparse gradient, and on CPU
grouped-query keys and values reach SDPA without being copied per query head.

Supports models whose logits are ``lm_head(final_hidden)`` (Llama, Mistral, Qwen, SmolLM, ...).
Imports torch only.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.utils.checkpoint import checkpoint


def _token_logps(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    # [C, H] -> [C, V] in float32 for a stable log-softmax, then gather the label's entry.
    logits = head(hidden).float()
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logps_from_hidden(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                            chunk_size: int = 1024) -> torch.Tensor:
    """log p(label | hidden) for N selected positions: hidden [N, H], labels [N] -> [N] float32.

    At most ``chunk_size`` positions' logits exist at a time. When N fits in one chunk its logits
    are kept for backward (no recomputation); otherwise every chunk is recomputed in backward.
    The head is called as a module (not through its weight), so sharded wrappers (FSDP, ZeRO-3)
    gather its parameters as in any forward."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if hidden.shape[0] <= chunk_size:
        return _token_logps(hidden, labels, lm_head)
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], labels[start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(_token_logps, h, y, lm_head, use_reentrant=False))
        else:
            out.append(_token_logps(h, y, lm_head))
    return torch.cat(out)


def _decoder_and_head(model):
    """The decoder stack and LM head of a causal LM, through PEFT and DDP wrappers."""
    base = getattr(model, "module", model)  # DDP wrapper
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(base.config, attr, None) not in (None, 1.0):
            raise NotImplementedError(f"models with {attr} are not supported by completion_logps yet")
    return base.get_decoder(), base.get_output_embeddings()


def _attention_implementation(model) -> str:
    base = getattr(model, "module", model)
    return getattr(base.config, "_attn_implementation", None) or "sdpa"


def supports_4d_mask(model) -> bool:
    """True when the model's attention takes a custom 4D mask (sdpa, eager); flash-attention does not."""
    return _attention_implementation(model) in ("sdpa", "eager")


def _plain_trained(weight) -> bool:
    """A weight that may be read outside its module's forward: a trained leaf tensor of its
    own, not sharded. FSDP's weights are DTensors (v2) or views of a flat parameter (v1), and
    DeepSpeed ZeRO-3's (``ds_id``) are gathered by the module's own hooks, which reading the
    weight directly would bypass."""
    return (weight is not None and weight.requires_grad and weight.is_leaf and torch.is_grad_enabled()
            and type(weight.data) is torch.Tensor and not hasattr(weight, "ds_id"))


def _tied_embeddings_sparse_grad(decoder, head, input_ids: torch.Tensor) -> torch.Tensor | None:
    """The input embeddings with a sparse gradient, where the embedding is the LM head's weight
    (tied, as in SmolLM2, Qwen2.5 <= 3B, Llama 3.2 1B/3B) and is trained; None elsewhere.

    Why: the head's gradient is a dense [V, H] tensor anyway; a dense embedding gradient would
    be a second one (zero-filled, then a few hundred rows written) summed into the first: passes
    over V x H floats (113 MB for SmolLM2) that took 7% of a forward and backward there. A sparse
    one holds only the rows of the tokens present; autograd adds it to the head's dense gradient
    (a copy, then the rows), so the parameter's gradient stays dense and equal up to summation
    order: 3-4% less time a forward and backward there (docs/training.md). Only for a plain
    ``nn.Embedding`` (a subclass may scale its output) on a weight ``_plain_trained`` accepts."""
    embedding = decoder.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if type(embedding) is not torch.nn.Embedding or weight is not head.weight or not _plain_trained(weight):
        return None
    return torch.nn.functional.embedding(input_ids, weight, embedding.padding_idx, embedding.max_norm,
                                         embedding.norm_type, embedding.scale_grad_by_freq, sparse=True)


_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def _grouped_query_sdpa(model, decoder, device: torch.device):
    """Within, for ``model`` on ``device``: transformers hands grouped-query keys and values to
    SDPA as they are (``enable_gqa``) instead of copying each key/value head for its query heads
    (``repeat_kv``, which it does whenever a mask is given, to keep CUDA's flash kernels). On CPU the kernel
    takes them as they are: the same log-probs to the bit for SmolLM2 and 3-4% less time a
    training forward and backward (docs/training.md). Not on CUDA, where a masked GQA call falls
    back to the math kernel. transformers reads the variable at every call; it is process-wide,
    so it is set only around the forward (the trainer runs one forward at a time) and a value
    the user set is left alone. Not under gradient checkpointing, whose recomputation in
    backward runs outside."""
    on = (_attention_implementation(model) == "sdpa" and device.type == "cpu"
          and not getattr(decoder, "gradient_checkpointing", False))
    if not on or _FORCE_GQA in os.environ:
        yield
        return
    os.environ[_FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(_FORCE_GQA, None)


def packed_logps(model, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                 src: torch.Tensor, labels: torch.Tensor, seq_index: torch.Tensor, num_seqs: int,
                 chunk_size: int = 1024) -> torch.Tensor:
    """Summed log-probs of the scored tokens of ``num_seqs`` sequences packed into rows.

    input_ids, position_ids: [R, T]. attention_mask: [R, T] (1 = real token) or [R, 1, T, T]
    boolean (True = query may attend key). src, labels, seq_index: [N]; token ``labels[n]`` is
    predicted by the hidden state at flat position ``src[n]`` (row * T + t) and its log-prob is
    added to output slot ``seq_index[n]``. Returns [num_seqs] float32."""
    decoder, head = _decoder_and_head(model)
    if attention_mask.dim() == 4 and _attention_implementation(model) == "eager":
        # eager attention adds the mask to the scores; sdpa takes the boolean mask as is
        dtype = head.weight.dtype
        attention_mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill(
            ~attention_mask, torch.finfo(dtype).min)
    embeds = _tied_embeddings_sparse_grad(decoder, head, input_ids)
    with _grouped_query_sdpa(model, decoder, input_ids.device):
        hidden = decoder(input_ids=None if embeds is not None else input_ids, inputs_embeds=embeds,
                         attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # [R, T, H]
    selected = hidden.flatten(0, 1)[src]  # [N, H]
    logps = token_logps_from_hidden(selected, labels, head, chunk_size)  # [N]
    return torch.zeros(num_seqs, device=logps.device, dtype=logps.dtype).index_add(0, seq_index, logps)


def completion_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Summed log-probs of completion tokens per sequence.

    input_ids, attention_mask, completion_mask: [B, T] (right padding). Returns [B] float32:
    sum over t with completion_mask[t] = 1 of log p(input_ids[t] | input_ids[:t])."""
    decoder, head = _decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    # position t predicts token t+1: shift the mask and labels left by one
    scored = completion_mask[:, 1:].bool()  # [B, T-1]
    labels = input_ids[:, 1:][scored]  # [N]
    selected = hidden[:, :-1][scored]  # [N, H]
    logps = token_logps_from_hidden(selected, labels, head, chunk_size)  # [N]
    row = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(scored)[scored]
    return torch.zeros(input_ids.shape[0], device=logps.device, dtype=logps.dtype).index_add(0, row, logps)
