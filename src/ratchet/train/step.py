"""One training step's math: a forward over chosen and rejected together, then the objective.

``pair_logps`` runs the model once on the 2B sequences of a pair batch and splits the summed
completion log-probs back into named tensors; ``pair_loss`` feeds them (and the precomputed
reference log-probs) to any paired objective in ``LOSSES``, passing only the tensors its
signature names. No loop, no optimizer here.
"""

from __future__ import annotations

import dataclasses

import torch

from ratchet.logprobs import completion_logps
from ratchet.losses import LossSpec
from ratchet.train.batches import SequenceBatch


def pair_logps(model, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen_logps [B], rejected_logps [B]) from one forward over the 2B stacked sequences."""
    device = next(model.parameters()).device
    logps = completion_logps(model, batch.input_ids.to(device), batch.attention_mask.to(device),
                             batch.completion_mask.to(device))
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


def pair_loss(spec: LossSpec, params, *, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor | None, ref_rejected_logps: torch.Tensor | None,
              chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor):
    """Call ``spec.fn`` with the tensors it reads; returns its LossOutput (per-example loss)."""
    available = {
        "policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps,
        "chosen_lengths": chosen_lengths.to(policy_chosen_logps), "rejected_lengths": rejected_lengths.to(policy_chosen_logps),
    }
    missing = [name for name in spec.inputs if available.get(name) is None]
    if missing:
        raise ValueError(f"objective {spec.name!r} needs {missing}, which a pairs file does not provide "
                         f"(it reads {spec.data!r} data)")
    tensors = {name: available[name] for name in spec.inputs}
    return spec.fn(**tensors, **dataclasses.asdict(params))
