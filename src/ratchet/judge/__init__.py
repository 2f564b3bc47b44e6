"""Judges score a prompt's completions behind the ``Judge`` protocol (see ``judge.base``).

``JUDGES`` maps the names a recipe may use (``judge.name``, ``evaluate.judge``) to a factory of a
judge: a class or function whose keyword arguments are the recipe's ``judge.params``. A name
``python:package.module:function`` is a user's own scoring function (``judge.python``).
``check_judge`` validates a name and its params when the config loads (before any model);
``build_judge`` makes the judge when a stage runs. A factory with a ``policy`` argument is handed a
zero-argument callable returning the (model, tokenizer) being trained, for judges that use the
policy itself (self-rewarding).

Each judge declares the held-out metric it supports (``judge_metric``): ``accuracy`` for
verifiers (``correct`` verdicts), ``mean_score`` for scorers (reward models, pointwise ratings),
``win_rate`` for pairwise judges (against a reference answer).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from ratchet.judge.answer import AnswerJudge
from ratchet.judge.code import unit_test_judge
from ratchet.judge.dstc import dstc_judge
from ratchet.judge.math import MathJudge
from ratchet.judge.python import PYTHON_PREFIX, import_function, python_judge
from ratchet.judge.text import ChoiceJudge, ExactJudge, RegexJudge
from ratchet.typecheck import check_type

METRICS = ("accuracy", "mean_score", "win_rate")


def make_reward_model_judge(model: str, batch_size: int = 8, max_length: int = 2048, label: int = 0,
                            dtype: str = "auto", device: str = "auto"):
    """``reward_model``: any local or hub sequence-classification checkpoint (``model``), batched."""
    from ratchet.judge.reward_model import RewardModelJudge
    from ratchet.models import resolve_model

    return RewardModelJudge.from_pretrained(resolve_model(model), device=device, dtype=dtype, batch_size=batch_size,
                                            max_length=max_length, label=label)


make_reward_model_judge.metric = "mean_score"


def make_llm_judge(policy: Callable | None = None, mode: str = "pointwise", model: str = "policy",
              template: str | None = None, max_new_tokens: int = 128, temperature: float = 0.0, samples: int = 1,
              batch_size: int = 16):
    """``llm``: a model as judge (``judge.llm_judge``): ``pointwise`` (a 1-10 rating, the mean of
    ``samples``), ``pairwise`` (both orders), or ``yes_no`` (its probability of calling the answer
    correct: no sampling). ``model: policy`` is the model being trained, which then judges its own
    answers (Self-Rewarding LMs, Yuan et al. 2024); else a model name or path."""
    from ratchet.generate.base import SamplingParams
    from ratchet.generate.engine import CachedSampler
    from ratchet.judge.llm_judge import PairwiseJudge, PointwiseJudge, YesNoJudge

    if model == "policy":
        if policy is None:
            from ratchet.config import ConfigError  # the CLI prints it as one line

            raise ConfigError("judge.params.model: policy (the model judges itself) needs the model: "
                              "ratchet judge --model M")
        judge_model, tokenizer = policy()
    else:
        from ratchet.models import load_model

        judge_model, tokenizer = load_model(model)
    if mode == "yes_no":
        return YesNoJudge(judge_model, tokenizer, template=template or "yes_no", batch_size=batch_size)
    params = SamplingParams(k=samples, temperature=temperature, max_new_tokens=max_new_tokens)
    sampler = CachedSampler(judge_model, tokenizer, batch_size=batch_size, progress=False)
    if mode == "pairwise":
        return PairwiseJudge(sampler, params, template=template or "pairwise")
    return PointwiseJudge(sampler, params, template=template or "pointwise")


make_llm_judge.metric = lambda params: "win_rate" if params.get("mode") == "pairwise" else "mean_score"

JUDGES: dict[str, Callable] = {
    "answer": AnswerJudge,
    "exact": ExactJudge,
    "regex": RegexJudge,
    "choice": ChoiceJudge,
    "math": MathJudge,
    "unit_tests": unit_test_judge,
    "dstc": dstc_judge,
    "reward_model": make_reward_model_judge,
    "llm": make_llm_judge,
}
_CHOICES = {("llm", "mode"): ("pointwise", "pairwise", "yes_no"), ("exact", "match"): ("exact", "contains"),
            ("regex", "match"): ("exact", "contains"),
            ("reward_model", "dtype"): ("auto", "float32", "bfloat16", "float16")}
"""Params with a closed set of values, checked at config load."""


def factory(name: str) -> Callable:
    """The factory a judge name stands for (importing a ``python:`` function)."""
    if name.startswith(PYTHON_PREFIX):
        return python_judge(import_function(name))
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; expected one of {sorted(JUDGES)} or "
                         f"{PYTHON_PREFIX}package.module:function")
    return JUDGES[name]


def _settable(fn: Callable) -> dict[str, inspect.Parameter]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = dict(inspect.signature(target).parameters)
    return {k: p for k, p in params.items() if k not in ("self", "policy")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _annotations(fn: Callable) -> dict:
    """Each settable parameter's type: its annotation, else its default's type (a user's function
    with ``prefix='P'`` takes a str), else Any."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve (a user's function): check by default instead
        hints = {}
    return {k: hints.get(k, p.annotation if p.annotation is not p.empty and not isinstance(p.annotation, str)
                         else (Any if p.default is p.empty or p.default is None else type(p.default)))
            for k, p in _settable(fn).items()}


def check_judge(name: str, params: dict) -> None:
    """Raise ValueError when ``name`` is not a judge or ``params`` do not fit its factory (an
    unknown key, a missing required one, a value of the wrong type); builds nothing."""
    fn = factory(name)
    settable, types_ = _settable(fn), _annotations(fn)
    for key, value in params.items():
        if key not in settable:
            raise ValueError(f"judge {name!r} has no parameter {key!r}; expected one of {sorted(settable) or '(none)'}")
        try:
            check_type(value, types_[key])
        except TypeError as e:
            raise ValueError(f"{key}: {e}") from None
        allowed = _CHOICES.get((name, key))
        if allowed and value not in allowed:
            raise ValueError(f"{key}: expected one of {list(allowed)}, got {value!r}")
    missing = [k for k, p in settable.items() if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"judge {name!r} needs parameter(s) {missing} (judge.params)")


def build_judge(name: str, params: dict | None = None, *, policy: Callable | None = None):
    """The judge ``name`` with ``params``; ``policy`` () -> (model, tokenizer) for judges that use it."""
    fn = factory(name)
    kwargs = dict(params or {})
    if "policy" in inspect.signature(fn).parameters:
        kwargs["policy"] = policy
    return fn(**kwargs)


def judge_metric(name: str, params: dict | None = None) -> str | None:
    """The held-out metric the judge declares, or None (then it is inferred from its verdicts)."""
    declared = getattr(factory(name), "metric", None)
    return declared(params or {}) if callable(declared) else declared

