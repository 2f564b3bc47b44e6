"""Held-out metrics as pure functions: unbiased pass@k, accuracy, win-rate with a bootstrap CI,
95% intervals of a held-out metric (``metric_interval``: Wilson for accuracy, the bootstrap for
mean scores and win rates) and the paired tests the loop's gate runs on two rounds' answers to the
same problems (``paired_comparison``: exact McNemar for correct/incorrect, paired bootstrap for scores).

No torch, no I/O; inputs are plain counts and outcomes, so the judges that produce them and
the reports that print them stay elsewhere. Every bootstrap draws from ``numpy``'s generator
seeded by its ``seed`` argument (default 0), so an interval is a function of the outcomes alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1):
    ``1 - C(n-c, k) / C(n, k)``, the chance that k samples drawn without replacement include a
    correct one. Computed as a product, since the binomials overflow floats for large n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given as (n samples, c correct); every problem needs n >= k."""
    if not counts:
        raise ValueError("mean_pass_at_k needs at least one problem")
    short = [i for i, (n, _) in enumerate(counts) if n < k]
    if short:
        raise ValueError(f"pass@{k} needs >= {k} samples per problem; problem(s) {short[:5]} have fewer")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def accuracy(correct: Sequence[bool | None]) -> float:
    """Fraction correct among the judged items; None (no verdict, e.g. a sandbox error) is left out."""
    judged = [bool(x) for x in correct if x is not None]
    if not judged:
        raise ValueError(f"accuracy of {len(correct)} item(s) without a single verdict")
    return sum(judged) / len(judged)


@dataclass(frozen=True)
class WinRate:
    rate: float
    """Mean outcome: wins count 1, ties 0.5, losses 0."""
    low: float
    high: float
    """Bootstrap percentile interval at ``confidence``."""
    n: int
    wins: int
    ties: int
    losses: int
    confidence: float


def win_rate(outcomes: Sequence[float], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> WinRate:
    """Win-rate of a model against a reference (e.g. gold answers), one outcome per comparison
    in [0, 1] (1 win, 0.5 tie, 0 loss), with a percentile bootstrap interval (``mean_interval``)."""
    x = np.asarray(outcomes, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("win_rate needs a non-empty 1-D sequence of outcomes")
    if np.any((x < 0) | (x > 1)) or np.any(np.isnan(x)):
        raise ValueError("win_rate outcomes must lie in [0, 1] (1 win, 0.5 tie, 0 loss)")
    low, high = mean_interval(x, confidence=confidence, n_boot=n_boot, seed=seed)
    return WinRate(rate=float(x.mean()), low=float(low), high=float(high), n=len(x), wins=int((x == 1).sum()),
                   ties=int(((x > 0) & (x < 1)).sum()), losses=int((x == 0).sum()), confidence=confidence)


def _bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The means of ``n_boot`` resamples of ``x`` with replacement. Resampling n values is the same
    as drawing multinomial counts over the distinct values, which needs memory per distinct value,
    not per value (a 0/1 outcome or a win/tie/loss has two or three)."""
    values, counts = np.unique(x, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(x), counts / len(x), size=n_boot)  # (n_boot, values)
    return draws @ values / len(x)


def _finite_1d(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{what} needs a non-empty 1-D sequence of finite numbers")
    return x


def mean_interval(values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (a judge's scores, win outcomes):
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of ``n_boot`` resampled means."""
    x = _finite_1d(values, "mean_interval")
    if not 0 < confidence < 1 or n_boot < 1:
        raise ValueError(f"need 0 < confidence < 1 and n_boot >= 1, got {confidence}, {n_boot}")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(_bootstrap_means(x, n_boot, seed), [alpha, 1 - alpha])
    return float(low), float(high)


def metric_interval(metrics: dict) -> tuple[float, float] | None:
    """The 95% interval of a held-out evaluation's metric (its metrics.json, or a round of a run
    summary), or None where the numbers for one are missing: the recorded ``interval``
    (``heldout_metric`` writes one), else a win rate's bootstrap ``low``/``high``, else Wilson's
    interval of an accuracy from ``correct`` (or ``accuracy`` x ``n``) out of ``n``."""
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x

    metric = metrics.get("metric", "accuracy")
    interval = metrics.get("interval")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(number(v) for v in interval):
        return float(interval[0]), float(interval[1])
    if metric == "win_rate" and number(metrics.get("low")) and number(metrics.get("high")):
        return float(metrics["low"]), float(metrics["high"])
    n, correct = metrics.get("n"), metrics.get("correct")
    if metric != "accuracy" or not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
        return None
    if correct is None and number(metrics.get("accuracy")):
        correct = round(metrics["accuracy"] * n)  # an accuracy is a count over n: exact up to rounding
    if isinstance(correct, int) and not isinstance(correct, bool) and 0 <= correct <= n:
        return wilson_interval(correct, n)
    return None


def mcnemar_exact(b: int, c: int, alternative: str = "greater") -> float:
    """Exact McNemar test of paired correct/incorrect outcomes: of the problems the two models
    disagree on, ``b`` were solved only by the new model and ``c`` only by the old. Under "no
    difference" each disagreement goes either way with probability 1/2, so b ~ Binomial(b + c, 1/2)
    (the exact, or binomial, form of McNemar's test; McNemar 1947, and the sign test).

    ``greater``: P(B >= b), the one-sided p-value of "the new model is better"; ``less``: P(B <= b);
    ``two-sided``: twice the smaller tail, at most 1. No disagreement at all gives 1."""
    if b < 0 or c < 0 or b != int(b) or c != int(c):
        raise ValueError(f"mcnemar_exact needs counts b, c >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0

    def tail(lo: int, hi: int) -> Fraction:  # exact: P(lo <= B <= hi)
        return Fraction(sum(comb(n, i) for i in range(lo, hi + 1)), 2 ** n)

    if alternative == "greater":
        return float(tail(b, n))
    if alternative == "less":
        return float(tail(0, b))
    if alternative == "two-sided":
        return float(min(Fraction(1), 2 * min(tail(b, n), tail(0, b))))
    raise ValueError(f"mcnemar_exact: alternative must be greater, less or two-sided, got {alternative!r}")


def paired_bootstrap(new: Sequence[float], old: Sequence[float], n_boot: int = 10000, seed: int = 0) -> float:
    """One-sided p-value of "mean(new) > mean(old)" for paired scores (``new[i]`` and ``old[i]`` on
    the same problem): the problems are resampled with replacement, and p is the share of resampled
    mean differences at or below 0, counted as (1 + #) / (1 + n_boot) so a Monte Carlo p-value is
    never 0 (Davison & Hinkley 1997, sec. 4.2). p <= alpha is the same as the lower bound of the
    one-sided (1 - alpha) percentile interval of the mean difference lying above 0."""
    x, y = _finite_1d(new, "paired_bootstrap"), _finite_1d(old, "paired_bootstrap")
    if len(x) != len(y):
        raise ValueError(f"paired_bootstrap needs one old score per new score, got {len(x)} and {len(y)}")
    if n_boot < 1:
        raise ValueError(f"paired_bootstrap needs n_boot >= 1, got {n_boot}")
    at_or_below = int(np.sum(_bootstrap_means(x - y, n_boot, seed) <= 1e-12))  # a float sum of zeros is not exact
    return (1 + at_or_below) / (1 + n_boot)


@dataclass(frozen=True)
class PairedComparison:
    test: str
    """``mcnemar_exact`` (correct/incorrect outcomes) or ``paired_bootstrap`` (scores, win outcomes)."""
    n: int
    """Problems compared (answered in both rounds)."""
    delta: float
    """mean(new) - mean(old) over those problems."""
    p_value: float
    """One-sided: the chance of a gain at least this large if the two models were equally good."""
    discordant: tuple[int, int] | None = None
    """McNemar's (b, c): problems solved only by the new model, only by the old."""


def paired_comparison(new: Sequence[float], old: Sequence[float], *, test: str, n_boot: int = 10000,
                      seed: int = 0) -> PairedComparison:
    """Compare two models' outcomes on the same problems, ``new[i]`` and ``old[i]`` on problem i.
    ``test`` ``mcnemar_exact``: outcomes are 1 (correct) or 0; ``paired_bootstrap``: any scores."""
    x, y = _finite_1d(new, "paired_comparison"), _finite_1d(old, "paired_comparison")
    if len(x) != len(y):
        raise ValueError(f"paired_comparison needs one old outcome per new one, got {len(x)} and {len(y)}")
    delta = float(x.mean() - y.mean())
    if test == "mcnemar_exact":
        if not np.all(np.isin(x, (0, 1)) & np.isin(y, (0, 1))):
            raise ValueError("mcnemar_exact needs outcomes of 1 (correct) or 0 (wrong)")
        b, c = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
        return PairedComparison(test, len(x), delta, mcnemar_exact(b, c), (b, c))
    if test == "paired_bootstrap":
        return PairedComparison(test, len(x), delta, paired_bootstrap(x, y, n_boot=n_boot, seed=seed))
    raise ValueError(f"paired_comparison: unknown test {test!r}; expected mcnemar_exact or paired_bootstrap")


def heldout_metric(metric: str | None, correct: Sequence[bool | None], scores: Sequence[float], *,
                   judge: str = "the judge") -> dict:
    """A held-out evaluation's metrics.json: ``{"metric": name, name: value, "n", ...}``.

    ``accuracy``: correct answers over all answers (an answer without a verdict, e.g. a sandbox
    error, counts as wrong and is counted in ``no_verdict``); ``mean_score``: the judge's mean
    score, with its standard deviation. Both carry ``interval``: their 95% interval (Wilson's for
    accuracy, the bootstrap's for a mean score). ``metric`` None infers it: accuracy if the judge gave any
    verdict, else mean_score, so a scorer never reads as a verifier that failed everything."""
    if len(correct) != len(scores) or not scores:
        raise ValueError(f"held-out metrics need one verdict and score per answer, "
                         f"got {len(correct)} and {len(scores)}")
    if metric is None:
        metric = "accuracy" if any(c is not None for c in correct) else "mean_score"
    if metric == "accuracy":
        if all(c is None for c in correct):
            raise ValueError(f"{judge} said of no held-out answer whether it is correct, so accuracy is undefined; "
                             "set judge.metric: mean_score (or evaluate.judge: a verifier)")
        right = sum(c is True for c in correct)
        return {"metric": "accuracy", "accuracy": right / len(correct), "correct": right, "n": len(correct),
                "no_verdict": sum(c is None for c in correct),
                "interval": list(wilson_interval(right, len(correct)))}
    if metric == "mean_score":
        x = np.asarray(scores, dtype=float)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{judge} gave a non-finite score to a held-out answer")
        return {"metric": "mean_score", "mean_score": float(x.mean()), "std": float(x.std()), "n": len(x),
                "interval": list(mean_interval(x))}
    raise ValueError(f"unknown held-out metric {metric!r}; expected accuracy or mean_score here")


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n`` (default z: 95%).

    Unlike the normal approximation p +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and does not
    collapse to a point at 0 or n successes, which matters for small held-out sets."""
    if not (n >= 1 and 0 <= successes <= n):
        raise ValueError(f"wilson_interval needs n >= 1 and 0 <= successes <= n, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p; clamping keeps rounding (p = 1 gives 0.9999...) from saying otherwise
    return max(0.0, min(p, float(center - half))), min(1.0, max(p, float(center + half)))
