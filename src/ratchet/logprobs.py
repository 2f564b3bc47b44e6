"""Sequence log-probabilities of completions: the single place for shift, mask and sum conventions.

``completion_logps`` never materialises logits over the prompt nor a full ``[B, T, V]`` tensor:
it runs the decoder to hidden states, keeps only the positions that predict completion tokens,
and applies the LM head to those in chunks, each chunk recomputed in backward (so the saved
activations are ``[N, H]`` hidden states, not ``[N, V]`` logits). With V = 49,152 and H = 576
for SmolLM2 that is an 85x smaller saved tensor.

Supports models whose logits are ``lm_head(final_hidden)`` (Llama, Mistral, Qwen, SmolLM, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _token_logps(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    # [C, H] -> [C, V] in float32 for a stable log-softmax, then gather the label's entry.
    logits = F.linear(hidden, weight, bias).float()
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logps_from_hidden(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Linear,
                            chunk_size: int = 1024) -> torch.Tensor:
    """log p(label | hidden) for N selected positions: hidden [N, H], labels [N] -> [N]."""
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], labels[start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(_token_logps, h, y, lm_head.weight, lm_head.bias, use_reentrant=False))
        else:
            out.append(_token_logps(h, y, lm_head.weight, lm_head.bias))
    return torch.cat(out) if out else hidden.new_zeros(0)


def _decoder_and_head(model):
    """The decoder stack and LM head of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # DDP wrapper
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(base.config, attr, None) not in (None, 1.0):
            raise NotImplementedError(f"models with {attr} are not supported by completion_logps yet")
    return base.get_decoder(), base.get_output_embeddings()


def completion_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Summed log-probs of completion tokens per sequence.

    input_ids, attention_mask, completion_mask: [B, T] (right padding). Returns [B] float32:
    sum over t with completion_mask[t] = 1 of log p(input_ids[t] | input_ids[:t])."""
    decoder, head = _decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    # position t predicts token t+1: shift the mask and labels left by one
    scored = completion_mask[:, 1:].bool()  # [B, T-1]
    labels = input_ids[:, 1:][scored]  # [N]
    selected = hidden[:, :-1][scored]  # [N, H]
    logps = token_logps_from_hidden(selected, labels, head, chunk_size)  # [N]
    row = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(scored)[scored]
    return torch.zeros(input_ids.shape[0], device=logps.device, dtype=logps.dtype).index_add(0, row, logps)
