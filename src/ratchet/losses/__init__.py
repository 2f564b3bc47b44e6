"""Preference objectives as pure tensor functions, and the one registry ``LOSSES``.

Each loss is a pure function of named tensors (summed completion log-probs of shape [B], plus what
the method needs) and keyword-only hyper-parameters. It returns a `LossOutput` whose `.loss` has shape
[B] (the caller reduces) and whose `.metrics` are detached tensors. Usage:

    spec = LOSSES["dpo"]
    params = spec.make_params(beta=0.1)             # unknown keys raise ValueError
    out = spec.fn(**tensors, **dataclasses.asdict(params))
    out.loss.mean().backward()

`spec.inputs` lists the tensor names `spec.fn` reads. The table in docs/objectives.md gives each
entry's formula, data, defaults and source. This dict is written by hand; add a row to add a loss.
"""

from ratchet.losses._core import LossOutput, LossSpec
from ratchet.losses.dpo import (
    CDPOParams,
    DPOParams,
    HingeParams,
    IPOParams,
    NCAParams,
    RDPOParams,
    cdpo_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    nca_loss,
    rdpo_loss,
)
from ratchet.losses.fdiv import FDPOParams, fdpo_loss
from ratchet.losses.kto import KTOParams, kto_kl_baseline, kto_loss
from ratchet.losses.nash import INPOParams, SPPOParams, inpo_loss, sppo_loss
from ratchet.losses.pit import PITParams, pit_loss
from ratchet.losses.reference_free import ORPOParams, SimPOParams, orpo_loss, simpo_loss
from ratchet.losses.rloo import RLOOParams, rloo_advantages, rloo_loss
from ratchet.losses.rpo import RPOParams, rpo_loss
from ratchet.losses.score import SCoReParams, score_loss, score_rewards
from ratchet.losses.selm import SELMParams, selm_loss
from ratchet.losses.sft import SFTParams, sft_loss
from ratchet.losses.srpo import SRPOParams, srpo_loss

LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(name="dpo", fn=dpo_loss, params=DPOParams, needs_reference=True, data="paired"),
    "cdpo": LossSpec(name="cdpo", fn=cdpo_loss, params=CDPOParams, needs_reference=True, data="paired"),
    "rdpo": LossSpec(name="rdpo", fn=rdpo_loss, params=RDPOParams, needs_reference=True, data="paired"),
    "ipo": LossSpec(name="ipo", fn=ipo_loss, params=IPOParams, needs_reference=True, data="paired"),
    # needs_reference stays True: with reference_free=True the ref tensors are accepted and ignored.
    "hinge": LossSpec(name="hinge", fn=hinge_loss, params=HingeParams, needs_reference=True, data="paired"),
    "nca": LossSpec(name="nca", fn=nca_loss, params=NCAParams, needs_reference=True, data="paired"),
    "kto": LossSpec(name="kto", fn=kto_loss, params=KTOParams, needs_reference=True, data="unpaired"),
    "simpo": LossSpec(name="simpo", fn=simpo_loss, params=SimPOParams, needs_reference=False, data="paired"),
    "orpo": LossSpec(name="orpo", fn=orpo_loss, params=ORPOParams, needs_reference=False, data="paired"),
    "rpo": LossSpec(name="rpo", fn=rpo_loss, params=RPOParams, needs_reference=True, data="paired"),
    # SELM also reads y_ref, the reference model's own response, stored next to the pair.
    "selm": LossSpec(name="selm", fn=selm_loss, params=SELMParams, needs_reference=True, data="paired"),
    "srpo": LossSpec(name="srpo", fn=srpo_loss, params=SRPOParams, needs_reference=True, data="revision"),
    # PIT's gap ordering on the same revision prompts as SRPO (the draft slot holds the reference response).
    "pit": LossSpec(name="pit", fn=pit_loss, params=PITParams, needs_reference=True, data="revision"),
    # INPO also reads anchor_* log-probs (the fixed initial model); ref_* is the previous iterate.
    "inpo": LossSpec(name="inpo", fn=inpo_loss, params=INPOParams, needs_reference=True, data="paired"),
    "sppo": LossSpec(name="sppo", fn=sppo_loss, params=SPPOParams, needs_reference=True, data="scored"),
    "fdpo": LossSpec(name="fdpo", fn=fdpo_loss, params=FDPOParams, needs_reference=True, data="paired"),
    "sft": LossSpec(name="sft", fn=sft_loss, params=SFTParams, needs_reference=False, data="sft"),
    # on-policy: trained by ratchet.train.online on k fresh samples per prompt, never from a pairs file
    "rloo": LossSpec(name="rloo", fn=rloo_loss, params=RLOOParams, needs_reference=True, data="online"),
    # SCoRe: two-turn episodes (answer, self-correction instruction, second answer), same on-policy trainer
    "score": LossSpec(name="score", fn=score_loss, params=SCoReParams, needs_reference=True, data="two_turn"),
}

__all__ = [
    "LOSSES",
    "LossOutput",
    "LossSpec",
    "CDPOParams",
    "DPOParams",
    "FDPOParams",
    "HingeParams",
    "INPOParams",
    "IPOParams",
    "KTOParams",
    "NCAParams",
    "ORPOParams",
    "PITParams",
    "RDPOParams",
    "RLOOParams",
    "RPOParams",
    "SCoReParams",
    "SELMParams",
    "SFTParams",
    "SPPOParams",
    "SRPOParams",
    "SimPOParams",
    "cdpo_loss",
    "dpo_loss",
    "fdpo_loss",
    "hinge_loss",
    "inpo_loss",
    "ipo_loss",
    "kto_kl_baseline",
    "kto_loss",
    "nca_loss",
    "orpo_loss",
    "pit_loss",
    "rdpo_loss",
    "rloo_advantages",
    "rloo_loss",
    "rpo_loss",
    "score_loss",
    "score_rewards",
    "selm_loss",
    "sft_loss",
    "simpo_loss",
    "sppo_loss",
    "srpo_loss",
]
