"""Preference objectives as pure tensor functions, and the one registry ``LOSSES``.

Each loss is a pure function of named tensors (summed completion log-probs of shape [B], plus what
the method needs) and keyword-only hyper-parameters. It returns a `LossOutput` whose `.loss` has shape
[B] (the caller reduces) and whose `.metrics` are detached tensors. Usage:

    spec = LOSSES["dpo"]
    params = spec.make_params(beta=0.1)             # unknown keys raise ValueError
    out = spec.fn(**tensors, **dataclasses.asdict(params))
    out.loss.mean().backward()

`spec.reads` declares the tensors `spec.fn` reads and where each comes from (policy, reference or
anchor log-probs of a named sequence, token counts, per-example values); trainers read it instead of
parsing names, and making an entry checks it against `spec.fn`'s signature (`spec.inputs`). The
table in docs/objectives.md gives each entry's formula, data, defaults and source. This dict is
written by hand; add a row to add a loss.
"""

from ratchet.losses._core import ONE_ANSWER, Input, LossOutput, LossSpec, Reads
from ratchet.losses.dpo import (
    CDPOParams,
    DPOParams,
    DPOPParams,
    HingeParams,
    IPOParams,
    NCAParams,
    RDPOParams,
    cdpo_loss,
    dpo_loss,
    dpop_loss,
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

_PAIR = ("chosen", "rejected")
_ONE = (ONE_ANSWER,)
_PAIR_REF = Reads(policy=_PAIR, reference=_PAIR)
_SRPO_REVISIONS = ("revise_chosen_from_rejected", "revise_rejected_from_rejected", "revise_chosen_from_chosen",
                   "revise_rejected_from_chosen")  # the revision sequences of ratchet.data.revision
_PIT_REVISIONS = ("revise_chosen_from_rejected", "revise_chosen_from_chosen", "revise_rejected_from_rejected",
                  "revise_rejected_from_chosen")  # the same four, in pit_loss's order

LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(name="dpo", fn=dpo_loss, params=DPOParams, data="paired", reads=_PAIR_REF),
    "dpop": LossSpec(name="dpop", fn=dpop_loss, params=DPOPParams, data="paired", reads=_PAIR_REF),
    "cdpo": LossSpec(name="cdpo", fn=cdpo_loss, params=CDPOParams, data="paired", reads=_PAIR_REF),
    "rdpo": LossSpec(name="rdpo", fn=rdpo_loss, params=RDPOParams, data="paired", reads=_PAIR_REF),
    "ipo": LossSpec(name="ipo", fn=ipo_loss, params=IPOParams, data="paired",
                    reads=Reads(policy=_PAIR, reference=_PAIR, lengths=_PAIR)),
    # reads the reference even with reference_free=True: the ref tensors are accepted and ignored.
    "hinge": LossSpec(name="hinge", fn=hinge_loss, params=HingeParams, data="paired", reads=_PAIR_REF),
    "nca": LossSpec(name="nca", fn=nca_loss, params=NCAParams, data="paired", reads=_PAIR_REF),
    # one labelled answer per example; kl_baseline is z0, from mismatched answers (kto_kl_baseline)
    "kto": LossSpec(name="kto", fn=kto_loss, params=KTOParams, data="unpaired",
                    reads=Reads(policy=_ONE, reference=_ONE, values=("labels", "kl_baseline"))),
    "simpo": LossSpec(name="simpo", fn=simpo_loss, params=SimPOParams, data="paired",
                      reads=Reads(policy=_PAIR, lengths=_PAIR)),
    "orpo": LossSpec(name="orpo", fn=orpo_loss, params=ORPOParams, data="paired",
                     reads=Reads(policy=_PAIR, lengths=_PAIR)),
    "rpo": LossSpec(name="rpo", fn=rpo_loss, params=RPOParams, data="paired",
                    reads=Reads(policy=_PAIR, reference=_PAIR, lengths=("chosen",))),
    # SELM also reads y_ref, the reference model's own response, stored next to the pair.
    "selm": LossSpec(name="selm", fn=selm_loss, params=SELMParams, data="paired",
                     reads=Reads(policy=(*_PAIR, "ref_response"), reference=(*_PAIR, "ref_response"))),
    "srpo": LossSpec(name="srpo", fn=srpo_loss, params=SRPOParams, data="revision",
                     reads=Reads(policy=_PAIR + _SRPO_REVISIONS, reference=_PAIR + _SRPO_REVISIONS)),
    # PIT's gap ordering on the same revision prompts as SRPO (the draft slot holds the reference response).
    "pit": LossSpec(name="pit", fn=pit_loss, params=PITParams, data="revision",
                    reads=Reads(policy=_PIT_REVISIONS, reference=_PIT_REVISIONS)),
    # INPO also reads anchor_* log-probs (the fixed initial model); ref_* is the previous iterate.
    "inpo": LossSpec(name="inpo", fn=inpo_loss, params=INPOParams, data="paired",
                     reads=Reads(policy=_PAIR, reference=_PAIR, anchor=_PAIR)),
    "sppo": LossSpec(name="sppo", fn=sppo_loss, params=SPPOParams, data="scored",
                     reads=Reads(policy=_PAIR, reference=_PAIR, values=("chosen_win_rates", "rejected_win_rates"))),
    "fdpo": LossSpec(name="fdpo", fn=fdpo_loss, params=FDPOParams, data="paired", reads=_PAIR_REF),
    "sft": LossSpec(name="sft", fn=sft_loss, params=SFTParams, data="sft", reads=Reads(policy=_ONE, lengths=_ONE)),
    # on-policy: trained by ratchet.train.online on k fresh samples per prompt, never from a pairs file
    "rloo": LossSpec(name="rloo", fn=rloo_loss, params=RLOOParams, data="online",
                     reads=Reads(policy=_ONE, reference=_ONE, values=("rewards",))),
    # SCoRe: two-turn episodes (answer, self-correction instruction, second answer), same on-policy trainer
    "score": LossSpec(name="score", fn=score_loss, params=SCoReParams, data="two_turn",
                      reads=Reads(policy=("first", "second"), reference=("first", "second"),
                                  values=("first_rewards", "second_rewards"))),
}

__all__ = [
    "LOSSES",
    "ONE_ANSWER",
    "Input",
    "LossOutput",
    "LossSpec",
    "Reads",
    "CDPOParams",
    "DPOParams",
    "DPOPParams",
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
    "dpop_loss",
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
