"""One check of a value against a type annotation, for everything a recipe sets: config fields,
objective parameters, judge and pair-strategy parameters. Pure Python; imports nothing of ratchet.

YAML gives plain values, so the annotations that occur are few: float, int, bool, str, dict,
``X | None``, ``Literal[...]`` and ``list[X]``. A float accepts an int or a numeric string (YAML 1.1
reads ``3e-6`` as a string) and must be finite: a nan or inf hyper-parameter only ever gives a nan.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _wrong(value: Any, tp: Any) -> TypeError:
    return TypeError(f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _check_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _wrong(value, float)
    if isinstance(value, str):  # YAML 1.1 reads 3e-6 (no dot) as a string
        try:
            out = float(value)
        except ValueError:
            raise _wrong(value, float) from None
    elif isinstance(value, (int, float)):
        out = float(value)
    else:
        raise _wrong(value, float)
    if not math.isfinite(out):  # a nan/inf hyper-parameter only ever gives a nan loss
        raise TypeError(f"expected a finite float, got {value!r}")
    return out


def check_type(value: Any, tp: Any) -> Any:
    """``value`` as annotation ``tp`` (int -> float, numeric string -> float), or a TypeError
    saying what was expected. Handles the annotations loss parameters use: float, int, bool, str,
    ``X | None``, ``Literal[...]`` and ``list[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_type(value, arg)
            except TypeError:
                pass
        raise _wrong(value, tp)
    if origin is Literal:  # type too, so True does not pass for 1 nor 1 for 1.0
        if any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            return value
        raise _wrong(value, tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r} ({type(value).__name__})")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return origin(check_type(v, item) for v in value)
    if tp is Any:
        return value
    if tp is float:
        return _check_float(value)
    if tp is int and isinstance(value, bool):  # bool is an int subclass; True is no count
        raise _wrong(value, tp)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _wrong(value, tp)
