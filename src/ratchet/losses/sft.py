"""Supervised fine-tuning as a registered loss: the negative log-likelihood of one selected completion.

Used on its own (rejection-sampling / STaR-style rounds) and as a regulariser next to preference losses.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ratchet.losses._core import LossOutput


@dataclass(frozen=True)
class SFTParams:
    """Parameters of the SFT loss."""

    token_mean: bool = False
    """If True, divide each sequence's NLL by its token count (`lengths` then required); the default is
    the summed NLL of the completion."""


def sft_loss(*, policy_logps: Tensor, lengths: Tensor | None = None, token_mean: bool) -> LossOutput:
    """L = -log pi_theta(y|x) (summed over completion tokens), or -log pi_theta(y|x) / |y| if `token_mean`.

    Per-sequence token mean: it equals the usual batch token mean (TRL's SFT) only when all completions
    in the batch have the same length; weight examples by length in the caller for the batch form.
    """
    if token_mean:
        if lengths is None:
            raise ValueError("sft with token_mean=True needs lengths")
        loss = -policy_logps / lengths.clamp(min=1)
    else:
        loss = -policy_logps
    return LossOutput(loss, {"logps": policy_logps.detach()})
