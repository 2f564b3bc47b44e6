"""Pair building: judged completions -> preference pairs. Pure Python, no torch.

Judges output scores; this module alone decides what becomes a pair. Each strategy is one
function ``(completions_row, judgments_row, *, max_pairs, rng) -> list[pair]`` and sits in the
hand-written ``STRATEGIES`` dict.
"""

from __future__ import annotations

import random
from typing import Callable

_FINISHED = ("stop", "eos")


def _pair(row: dict, scores: list[float], i: int, j: int) -> dict:
    c, r = row["completions"][i], row["completions"][j]
    return {
        "id": row["id"], "messages": row["messages"],
        "chosen": c["text"], "rejected": r["text"],
        "chosen_score": scores[i], "rejected_score": scores[j],
        # a completion cut by max_new_tokens must not be taught to end there
        "chosen_complete": c.get("finish_reason") in _FINISHED,
        "rejected_complete": r.get("finish_reason") in _FINISHED,
    }


def _distinct(indices: list[int], texts: list[str]) -> list[int]:
    seen, out = set(), []
    for i in indices:
        if texts[i] not in seen:
            seen.add(texts[i])
            out.append(i)
    return out


def correct_vs_incorrect(row: dict, judged: dict, *, max_pairs: int, rng: random.Random) -> list[dict]:
    """Pairs of a correct and an incorrect completion of the same prompt (distinct texts),
    at most ``max_pairs`` drawn at random from all correct x incorrect combinations."""
    texts = [c["text"] for c in row["completions"]]
    correct = judged.get("correct") or [s > 0.5 for s in judged["scores"]]
    good = _distinct([i for i, ok in enumerate(correct) if ok], texts)
    bad = _distinct([i for i, ok in enumerate(correct) if not ok], texts)
    combos = [(i, j) for i in good for j in bad]
    rng.shuffle(combos)
    return [_pair(row, judged["scores"], i, j) for i, j in combos[:max_pairs]]


def best_vs_worst(row: dict, judged: dict, *, max_pairs: int, rng: random.Random) -> list[dict]:
    """The highest- against the lowest-scored completion, if their scores differ (one pair)."""
    scores = judged["scores"]
    order = sorted(range(len(scores)), key=lambda i: (scores[i], rng.random()))
    lo, hi = order[0], order[-1]
    if max_pairs < 1 or scores[hi] <= scores[lo]:
        return []
    return [_pair(row, scores, hi, lo)]


Strategy = Callable[..., list[dict]]
STRATEGIES: dict[str, Strategy] = {
    "correct_vs_incorrect": correct_vs_incorrect,
    "best_vs_worst": best_vs_worst,
}


def build_pairs(completions: list[dict], judgments: list[dict], *, strategy: str, max_pairs_per_prompt: int,
                seed: int = 0) -> list[dict]:
    """Apply ``strategy`` to every prompt; rows are matched by ``id``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; expected one of {sorted(STRATEGIES)}")
    by_id = {j["id"]: j for j in judgments}
    rng = random.Random(seed)
    pairs = []
    for n, row in enumerate(completions, start=1):
        judged = by_id.get(row["id"])
        if judged is None:
            raise ValueError(f"completions row {n} (id {row['id']!r}) has no judgment")
        if len(judged["scores"]) != len(row["completions"]):
            raise ValueError(f"id {row['id']!r}: {len(row['completions'])} completions but "
                             f"{len(judged['scores'])} scores")
        pairs += STRATEGIES[strategy](row, judged, max_pairs=max_pairs_per_prompt, rng=rng)
    return pairs
