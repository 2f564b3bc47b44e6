"""What every loss shares: the output container, the registry entry, and the log-ratio helpers.

Owns `LossOutput` (per-example loss plus detached metrics), `LossSpec` (one registry entry: the
function, its parameter dataclass, the kind of data it reads, and `Reads`, the tensors it reads and
where each comes from), and two tiny tensor helpers. Knows nothing about models, tokenizers or
training loops: a trainer reads `LossSpec.reads` to know what to compute, never the tensor names.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from torch import Tensor

from ratchet.typecheck import check_type

DataKind = Literal["paired", "unpaired", "revision", "scored", "sft", "online", "two_turn"]


@dataclass(frozen=True)
class LossOutput:
    """The result of one loss call: `.loss` is per example, shape [B]; the caller reduces."""

    loss: Tensor
    """Per-example loss, shape [B]. Carries the gradient."""
    metrics: dict[str, Tensor]
    """Detached diagnostics (e.g. `chosen_rewards`, `rejected_rewards`, `margins`), each [B] or a scalar."""


class ParamError(ValueError):
    """A loss parameter of the wrong type; ``param`` and ``problem`` let a caller re-word it
    (the config names the dotted key)."""

    def __init__(self, loss: str, param: str, problem: str) -> None:
        super().__init__(f"loss {loss!r} parameter {param!r}: {problem}")
        self.param, self.problem = param, problem


Source = Literal["policy", "ref", "anchor", "lengths", "value"]

ONE_ANSWER = "completion"
"""The sequence of a record with one answer (an unpaired row, an SFT answer, an on-policy sample):
its tensors drop the sequence from their names (`policy_logps`, `ref_logps`, `lengths`)."""


class Input(NamedTuple):
    """Where one tensor an objective reads comes from."""

    source: Source
    """`policy`, `ref`, `anchor`: summed completion log-probs of a sequence under the policy, the
    reference model, the anchor model (INPO); `lengths`: a sequence's completion token count;
    `value`: a per-example number the data (or, for KTO's z0, the trainer) supplies."""
    of: str
    """The sequence (one prompt plus one answer: `chosen`, `revise_chosen_from_rejected`, ...), or
    for a `value` the tensor's own name."""


@dataclass(frozen=True)
class Reads:
    """What an objective's function reads, declared once in its registry entry. Each tuple is in
    the order the trainer lays the sequences out (and keys the reference cache by)."""

    policy: tuple[str, ...]
    """Sequences whose policy log-probs it reads: `policy_<seq>_logps`."""
    reference: tuple[str, ...] = ()
    """Sequences whose reference log-probs it reads: `ref_<seq>_logps`."""
    anchor: tuple[str, ...] = ()
    """Sequences whose anchor-model log-probs it reads (INPO's fixed initial model): `anchor_<seq>_logps`."""
    lengths: tuple[str, ...] = ()
    """Sequences whose completion token counts it reads: `<seq>_lengths`."""
    values: tuple[str, ...] = ()
    """Per-example numbers it reads, by tensor name (`chosen_win_rates`, `rewards`, `labels`)."""

    @property
    def tensors(self) -> dict[str, Input]:
        """Tensor name -> `Input`, for every tensor declared here."""
        def logps(source: str, seq: str) -> str:
            return f"{source}_logps" if seq == ONE_ANSWER else f"{source}_{seq}_logps"

        out = {logps(source, seq): Input(source, seq)
               for source, seqs in (("policy", self.policy), ("ref", self.reference), ("anchor", self.anchor))
               for seq in seqs}
        out |= {"lengths" if seq == ONE_ANSWER else f"{seq}_lengths": Input("lengths", seq) for seq in self.lengths}
        return out | {name: Input("value", name) for name in self.values}


@dataclass(frozen=True)
class LossSpec:
    """One registry entry. Data, not behaviour: the trainer reads the fields and calls `fn`."""

    name: str
    """The registry key, repeated here so error messages can name the loss."""
    fn: Callable[..., LossOutput]
    """The pure loss function; called as `fn(**tensors, **dataclasses.asdict(params))`."""
    params: type
    """The dataclass type holding this loss's hyper-parameters and their defaults."""
    data: DataKind
    """The kind of training record the loss consumes."""
    reads: Reads
    """The tensors `fn` reads and where each comes from; must name exactly `fn`'s tensor arguments
    (checked when the entry is made)."""

    def __post_init__(self) -> None:
        declared, taken = set(self.reads.tensors), set(self.inputs)
        if declared != taken:
            raise ValueError(f"loss {self.name!r}: `reads` declares {sorted(declared - taken)} that {self.fn.__name__} "
                             f"does not take and misses {sorted(taken - declared)} that it does")

    def make_params(self, **overrides: object) -> object:
        """Build the params dataclass from its defaults plus `overrides`; unknown keys are an error."""
        allowed = [f.name for f in dataclasses.fields(self.params)]
        hints = typing.get_type_hints(self.params)
        checked = {}
        for key, value in overrides.items():
            if key not in allowed:
                raise ValueError(
                    f"loss {self.name!r} has no parameter {key!r}; expected one of: {', '.join(allowed) or '(none)'}"
                )
            try:
                checked[key] = check_type(value, hints[key])
            except TypeError as e:
                raise ParamError(self.name, key, str(e)) from None
        return self.params(**checked)

    @property
    def on_policy(self) -> bool:
        """Whether the loss learns from samples drawn and scored while training (RLOO, SCoRe:
        ``ratchet.train.online``) rather than from a file of records."""
        return self.data in ("online", "two_turn")

    @property
    def needs_reference(self) -> bool:
        """Whether `fn` reads log-probs of a reference model (`ref_*` tensors)."""
        return bool(self.reads.reference)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the tensors `fn` reads (its keyword arguments that are not parameters)."""
        param_names = {f.name for f in dataclasses.fields(self.params)}
        return tuple(n for n in inspect.signature(self.fn).parameters if n not in param_names)


def logratio(policy_logps: Tensor, ref_logps: Tensor) -> Tensor:
    """h = log pi_theta(y|x) - log pi_ref(y|x), the implicit reward divided by beta (shape [B])."""
    return policy_logps - ref_logps


def reward_metrics(beta: float, chosen_logratios: Tensor, rejected_logratios: Tensor) -> dict[str, Tensor]:
    """The standard DPO-style metrics: beta * h for chosen and rejected, and their difference (detached)."""
    chosen = beta * chosen_logratios.detach()
    rejected = beta * rejected_logratios.detach()
    return {"chosen_rewards": chosen, "rejected_rewards": rejected, "margins": chosen - rejected}


def check_unit_interval(name: str, value: float, *, upper: float = 1.0, closed_upper: bool = True) -> None:
    """Raise a clear error when a probability-like parameter is out of range (used in `__post_init__`)."""
    ok = 0.0 <= value <= upper if closed_upper else 0.0 <= value < upper
    if not ok:
        bracket = "]" if closed_upper else ")"
        raise ValueError(f"{name} must be in [0, {upper}{bracket}, got {value}")

