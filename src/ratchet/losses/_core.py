"""What every loss shares: the output container, the registry entry, and the log-ratio helpers.

Owns `LossOutput` (per-example loss plus detached metrics), `LossSpec` (one registry entry: the
function, its parameter dataclass, whether it needs a reference model, and the kind of data it
reads), and two tiny tensor helpers. Knows nothing about models, tokenizers or training loops.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class LossSpec:
    """One registry entry. Data, not behaviour: the trainer reads the fields and calls `fn`."""

    name: str
    """The registry key, repeated here so error messages can name the loss."""
    fn: Callable[..., LossOutput]
    """The pure loss function; called as `fn(**tensors, **dataclasses.asdict(params))`."""
    params: type
    """The dataclass type holding this loss's hyper-parameters and their defaults."""
    needs_reference: bool
    """Whether `fn` reads log-probs of a reference model (`ref_*` tensors)."""
    data: DataKind
    """The kind of training record the loss consumes."""

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

