"""A user's own judge: ``judge.name: python:package.module:function``.

The function is imported when the config loads (so a typo fails before any model) and called as
``function(row, completions, **judge.params) -> list[float | bool]``: one value per completion,
``row`` being the prompt row with the task's fields after mapping (``row["answer"]``, any extra
column). ``True`` (or a number equal to 1.0 when every value is 0 or 1) means correct; any other
number is a score with no verdict, for which a recipe sets ``judge.metric: mean_score``.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, Sequence

from ratchet.judge.base import JudgeInputError, Judgment

PYTHON_PREFIX = "python:"


def import_function(name: str) -> Callable:
    """``python:package.module:function`` -> the function; ValueError saying what is wrong."""
    spec = name[len(PYTHON_PREFIX):]
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"judge {name!r}: expected python:package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or an error inside the user's module while importing it
        raise ValueError(f"judge {name!r}: cannot import {module_name!r} ({type(e).__name__}: {e}); "
                         "is its folder on PYTHONPATH?") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"judge {name!r}: {module_name} has no function {attr!r}")
    return fn


def _judgment(value, where: str, binary: bool) -> Judgment:
    if isinstance(value, bool):
        return Judgment(score=float(value), correct=value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JudgeInputError(f"{where}: expected a bool or a finite number, got {value!r}")
    return Judgment(score=float(value), correct=(value == 1.0) if binary else None)


class PythonJudge:
    def __init__(self, fn: Callable, params: dict):
        self.fn, self.params = fn, params

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        name = f"{self.fn.__module__}.{self.fn.__name__}"
        values = self.fn(prompt, list(completions), **self.params)
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            raise JudgeInputError(f"judge {name} returned {values!r} for prompt {prompt.get('id', '?')!r}; expected a list "
                             f"of {len(completions)} values (one per completion)")
        binary = all(isinstance(v, bool) or v in (0, 1) for v in values)
        return [_judgment(v, f"judge {name}, prompt {prompt.get('id', '?')!r}", binary) for v in values]


def python_judge(fn: Callable) -> Callable:
    """A factory (as ``JUDGES`` holds) whose keyword parameters are the function's own beyond
    ``(row, completions)``, so ``judge.params`` are checked against them at config load."""
    import inspect

    params = list(inspect.signature(fn).parameters.values())[2:]

    def make(**kwargs) -> PythonJudge:
        return PythonJudge(fn, kwargs)

    make.__signature__ = inspect.Signature(params)
    return make
