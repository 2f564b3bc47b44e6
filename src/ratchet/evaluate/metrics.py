"""Held-out metrics as pure functions: unbiased pass@k, accuracy, win-rate with a bootstrap CI.

No torch, no I/O; inputs are plain counts and outcomes, so the judges that produce them and
the reports that print them stay elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    in [0, 1] (1 win, 0.5 tie, 0 loss), with a percentile bootstrap interval.

    Resampling n outcomes with replacement is the same as drawing multinomial counts over the
    distinct outcome values, which needs memory per value, not per outcome."""
    x = np.asarray(outcomes, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("win_rate needs a non-empty 1-D sequence of outcomes")
    if np.any((x < 0) | (x > 1)) or np.any(np.isnan(x)):
        raise ValueError("win_rate outcomes must lie in [0, 1] (1 win, 0.5 tie, 0 loss)")
    if not 0 < confidence < 1 or n_boot < 1:
        raise ValueError(f"need 0 < confidence < 1 and n_boot >= 1, got {confidence}, {n_boot}")
    values, counts = np.unique(x, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(x), counts / len(x), size=n_boot)  # (n_boot, values)
    means = draws @ values / len(x)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return WinRate(rate=float(x.mean()), low=float(low), high=float(high), n=len(x), wins=int((x == 1).sum()),
                   ties=int(((x > 0) & (x < 1)).sum()), losses=int((x == 0).sum()), confidence=confidence)


def heldout_metric(metric: str | None, correct: Sequence[bool | None], scores: Sequence[float], *,
                   judge: str = "the judge") -> dict:
    """A held-out evaluation's metrics.json: ``{"metric": name, name: value, "n", ...}``.

    ``accuracy``: correct answers over all answers (an answer without a verdict, e.g. a sandbox
    error, counts as wrong and is counted in ``no_verdict``); ``mean_score``: the judge's mean
    score, with its standard deviation. ``metric`` None infers it: accuracy if the judge gave any
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
                "no_verdict": sum(c is None for c in correct)}
    if metric == "mean_score":
        x = np.asarray(scores, dtype=float)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{judge} gave a non-finite score to a held-out answer")
        return {"metric": "mean_score", "mean_score": float(x.mean()), "std": float(x.std()), "n": len(x)}
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
