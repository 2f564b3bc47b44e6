"""Shared test helpers: random inputs for any registered loss, and shorthand tensor builders."""

from __future__ import annotations

import torch
from torch import Tensor

from ratchet.losses import LossSpec

DTYPE = torch.float64


def t(*values: float) -> Tensor:
    """A float64 tensor of the given values (shape [B])."""
    return torch.tensor(values, dtype=DTYPE)


def random_inputs(spec: LossSpec, batch: int = 5, seed: int = 0, requires_grad: bool = False) -> dict[str, Tensor]:
    """Plausible tensors for every input `spec.fn` names, in float64."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name in spec.inputs:
        if name.endswith("lengths"):
            out[name] = torch.randint(1, 12, (batch,), generator=g)
        elif name == "labels":
            out[name] = torch.arange(batch) % 2 == 0
        elif name == "kl_baseline":
            out[name] = torch.rand((), generator=g, dtype=DTYPE)
        elif name.endswith("win_rates"):
            out[name] = torch.rand(batch, generator=g, dtype=DTYPE)
        elif name.endswith("logps"):
            x = -1 - 10 * torch.rand(batch, generator=g, dtype=DTYPE)
            out[name] = x.requires_grad_(requires_grad and name.startswith("policy_"))
        else:
            raise AssertionError(f"no generator for input {name!r}")
    return out


def at_reference(spec: LossSpec, batch: int = 3, seed: int = 0) -> dict[str, Tensor]:
    """Inputs with every policy log-prob equal to its reference (and anchor) counterpart."""
    x = random_inputs(spec, batch, seed)
    for name in x:
        for prefix in ("ref_", "anchor_"):
            if name.startswith(prefix) and "policy_" + name[len(prefix) :] in x:
                x[name] = x["policy_" + name[len(prefix) :]].clone()
    return x
