"""One training step's math: which sequences an objective reads, one forward over all of them,
then the objective on named tensors. No loop, no optimizer here.

``needs(spec)`` reads what the objective declares (``LossSpec.reads``) and says which
sequences go through the policy (chosen and rejected always, then its policy sequences and those
whose lengths it reads), which reference and anchor log-probs are precomputed, and which
pairs-row numbers are read (``ROW_VALUES``: ``<seq>_win_rates`` from the row field
``<seq>_win_rate``). The two objectives whose inputs are not per-sequence tensors of a pair get a
hand-written mapping (by ``LossSpec.data``): KTO (``unpaired``; on a pairs file chosen is
desirable and rejected undesirable, on an unpaired file each row's ``completion`` is one example
labelled by its ``label``; z0 from the ``kl`` sequence) and SFT (the chosen answers of pairs, or
every row's ``completion`` of an unpaired file: ``data.selection`` writes SFT rows so).

``PolicyLogps`` is the module the training loop prepares with accelerate: a packed batch in,
summed completion log-probs out. DDP, FSDP and DeepSpeed see its ``forward``, so gradient
synchronisation and parameter gathering happen as in any forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ratchet.logprobs import packed_logps
from ratchet.losses import LossSpec, kto_kl_baseline
from ratchet.train.batches import PairExample, PairsError, pack


class PolicyLogps(torch.nn.Module):
    """The model as the loop sees it: ``ratchet.logprobs.packed_logps`` as a module."""

    def __init__(self, model: torch.nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self._no_split_modules = getattr(model, "_no_split_modules", None)  # FSDP auto-wrap reads it

    def forward(self, input_ids, position_ids, attention_mask, src, labels, seq_index, num_seqs: int):
        return packed_logps(self.model, input_ids, position_ids, attention_mask, src, labels, seq_index, num_seqs,
                            self.chunk_size)


@dataclass(frozen=True)
class Needs:
    policy: tuple[str, ...]
    """Sequences run through the policy (chosen and rejected first)."""
    reference: tuple[str, ...]
    """Sequences whose reference log-probs are precomputed."""
    anchor: tuple[str, ...]
    """Sequences whose anchor-model log-probs are precomputed (INPO)."""
    values: tuple[str, ...]
    """Pairs-row fields read as per-example numbers."""


ROW_VALUES = {"chosen_win_rates": "chosen_win_rate", "rejected_win_rates": "rejected_win_rate"}
"""Per-example values an objective may read from a pairs row: tensor name -> row field (SPPO's win rates)."""

_SPECIAL = {  # (LossSpec.data, row format of the file) -> Needs
    ("unpaired", "pairs"): Needs(("chosen", "rejected", "kl"), ("chosen", "rejected", "kl"), (), ()),
    ("unpaired", "unpaired"): Needs(("completion", "kl"), ("completion", "kl"), (), ("label",)),
    ("sft", "pairs"): Needs(("chosen",), (), (), ()),
    ("sft", "unpaired"): Needs(("completion",), (), (), ()),  # every row's answer (data.selection's SFT rows)
}


def needs(spec: LossSpec, row_format: str = "pairs") -> Needs:
    """What ``spec`` reads from a file of ``row_format`` rows (``batches.ROW_FIELDS``)."""
    if spec.on_policy:  # scored as sampled (train.online), never read from a file
        raise PairsError(f"objective {spec.name!r} learns from on-policy samples scored while training; "
                         f"run it with `ratchet loop` (train.loss.name: {spec.name}), not on a {row_format} file")
    if (spec.data, row_format) in _SPECIAL:
        return _SPECIAL[spec.data, row_format]
    if row_format != "pairs":
        readers = sorted({d for d, f in _SPECIAL if f == row_format})
        raise PairsError(f"objective {spec.name!r} trains on pairs (chosen/rejected); the file holds {row_format} "
                         f"rows, which only objectives with LossSpec.data in {readers} read (kto, sft)")
    reads = spec.reads
    for name in reads.values:
        if name not in ROW_VALUES:
            raise ValueError(f"objective {spec.name!r} reads {name!r}, which the trainer cannot build from a "
                             f"pairs file (row values: {sorted(ROW_VALUES)})")
    return Needs(tuple(dict.fromkeys(("chosen", "rejected") + reads.policy + reads.lengths)), reads.reference,
                 reads.anchor, tuple(ROW_VALUES[name] for name in reads.values))


def split_logps(logps: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """[len(names) * B] packed outputs -> {name: [B]} (``batches.pack`` slot order)."""
    return dict(zip(names, logps.view(len(names), -1)))


def loss_inputs(spec: LossSpec, policy: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor],
                precomputed: dict[str, torch.Tensor], values: dict[str, torch.Tensor],
                mean_across_processes: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, torch.Tensor]:
    """The tensors ``spec.fn`` reads, by name. ``policy`` and ``lengths`` are keyed by sequence,
    ``precomputed`` by input name (``ref_chosen_logps``), ``values`` by row field."""
    if spec.data == "unpaired":
        kl = mean_across_processes(kto_kl_baseline(policy["kl"].detach(), precomputed["ref_kl_logps"]))
        if "completion" in policy:  # KTO on unpaired rows: one labelled example each
            return {"policy_logps": policy["completion"], "ref_logps": precomputed["ref_completion_logps"],
                    "labels": values["label"].bool(), "kl_baseline": kl}
        ones = torch.ones_like(policy["chosen"], dtype=torch.bool)  # KTO on pairs: chosen desirable
        return {"policy_logps": torch.cat([policy["chosen"], policy["rejected"]]),
                "ref_logps": torch.cat([precomputed["ref_chosen_logps"], precomputed["ref_rejected_logps"]]),
                "labels": torch.cat([ones, ~ones]), "kl_baseline": kl}
    if spec.data == "sft":  # the selected answers of an SFT file, or the chosen answers of pairs
        seq = "completion" if "completion" in policy else "chosen"
        return {"policy_logps": policy[seq], "lengths": lengths[seq].to(policy[seq])}
    out = {}
    for name, (source, of) in spec.reads.tensors.items():
        if source == "policy":
            out[name] = policy[of]
        elif source == "lengths":
            out[name] = lengths[of].to(policy["chosen"])
        elif source == "value":
            out[name] = values[ROW_VALUES[name]]
        else:  # ref, anchor: precomputed once per dataset (train.reference)
            out[name] = precomputed[f"{source}_{of}_logps"]
    return out


def micro_batch_loss(policy, spec: LossSpec, params, need: Needs, examples: list[PairExample],
                     precomputed: dict[str, torch.Tensor], *, pad: int, share_prompt: bool, weights: list[float],
                     device, mean_across=lambda t: t):
    """One forward over a micro-batch, then the objective. Returns ``(loss_sum, out, logps, packed)``
    where ``loss_sum`` is the weighted sum of per-pair losses (a filler pair has weight 0); the
    caller divides by the pairs of the whole step."""
    packed = pack(examples, need.policy, pad, share_prompt=share_prompt)
    logps = split_logps(policy(**packed.model_inputs(device)), need.policy)
    values = {k: torch.tensor([e.values[k] for e in examples], device=device) for k in need.values}
    tensors = loss_inputs(spec, logps, split_logps(packed.lengths, need.policy),
                          {k: v.to(device) for k, v in precomputed.items()}, values, mean_across)
    out = spec.fn(**tensors, **dataclasses.asdict(params))
    per_pair = out.loss.numel() // len(examples)  # 2 for KTO on pairs (chosen, rejected), 1 on unpaired rows
    w = torch.tensor(weights, device=out.loss.device).repeat(per_pair)
    return (out.loss * w).sum() / per_pair, out, logps, packed


def pair_loss(spec: LossSpec, params, *, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor | None, ref_rejected_logps: torch.Tensor | None,
              chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor):
    """Call ``spec.fn`` of a chosen/rejected objective; returns its LossOutput (per-example loss)."""
    available = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
                 "ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps,
                 "chosen_lengths": chosen_lengths.to(policy_chosen_logps),
                 "rejected_lengths": rejected_lengths.to(policy_chosen_logps)}
    missing = [name for name in spec.inputs if available.get(name) is None]
    if missing:
        raise ValueError(f"objective {spec.name!r} needs {missing}, which pair_loss does not provide")
    return spec.fn(**{name: available[name] for name in spec.inputs}, **dataclasses.asdict(params))
