"""The two built-in tasks as ``Task`` instances: ``arithmetic`` (generated word problems, judged by
their number) and ``humaneval`` (the 164 HumanEval problems, judged by their unit tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ratchet.data import arithmetic
from ratchet.tasks.base import TaskError

from ratchet.judge.code import STOP as CODE_STOP
from ratchet.judge.code import human_eval_problems


@dataclass(frozen=True)
class BuiltinTask:
    """A task whose rows a function makes: ``make(n, split=, seed=, **options)``; round r draws with seed + r."""

    name: str
    make: Callable[..., list[dict]]
    stop: tuple[str, ...]
    default_judge: str
    seed: int = 0
    options: dict = field(default_factory=dict)
    """Keyword arguments of ``make`` besides the split and seed (arithmetic: ``steps`` when not 1)."""

    def check(self) -> dict:
        return {"task": self.name, "source": "built-in"}

    def heldout(self, n: int) -> list[dict]:
        return self._rows(n, "heldout", self.seed)

    def train(self, n: int, round: int) -> list[dict]:
        return self._rows(n, "train", self.seed + round)

    def _rows(self, n: int, split: str, seed: int) -> list[dict]:
        try:
            return self.make(n, split=split, seed=seed, **self.options)
        except ValueError as e:  # e.g. more HumanEval problems asked for than the split has
            raise TaskError(str(e)) from None

    def fingerprint(self) -> dict:
        return {"builtin": self.name, "seed": self.seed, **self.options}  # steps=1 keeps the old fingerprint


BUILTIN = {
    "arithmetic": dict(make=arithmetic.make_problems, stop=arithmetic.STOP, default_judge="answer"),
    "humaneval": dict(make=human_eval_problems, stop=CODE_STOP, default_judge="unit_tests"),
}
"""Built-in task name -> how to make it. The default judge of each is in ``default_judge``."""


def builtin_task(name: str, *, seed: int = 0, steps: int = 1) -> BuiltinTask:
    """Built-in task ``name``; ``steps`` (operations per problem, ``arithmetic`` only) as ``task.steps``."""
    if name not in BUILTIN:
        raise TaskError(f"task.name: unknown built-in task {name!r}; expected one of {sorted(BUILTIN)}, "
                        "or give task.source (a data file or hf:<dataset>)")
    if steps not in arithmetic.STEPS or (steps != 1 and name != "arithmetic"):
        raise TaskError(f"task.steps: expected one of {list(arithmetic.STEPS)} for the arithmetic task "
                        f"(other tasks: 1), got {steps!r} for {name}")
    return BuiltinTask(name=name, seed=seed, options={"steps": steps} if steps != 1 else {}, **BUILTIN[name])
