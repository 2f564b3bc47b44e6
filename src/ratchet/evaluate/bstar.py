"""B-STaR monitoring of one round's samples: exploration, exploitation and their balance. Pure Python.

Source: B-STaR, Zeng et al., arXiv 2412.17256 (ICLR 2025), eq. 3 and code hkust-nlp/B-STaR
``train_code/determine_hyper.py::cal_modi_acc_soft``; ``docs/algorithms.md#bstar`` (docs/algorithms.md section 9.5).

Inputs are a round's completions and judgments rows (``data.records``), matched by ``id``. The
ground truth is the judgments' ``correct``; the judge's ranking is its ``scores``. A prompt whose
``correct`` holds an unknown (``None``, or no ``correct`` at all) is left out of every metric
here, and ``prompts`` says how many remained. This module knows nothing of sampling: the loop
samples, this only counts.

Two samples are "the same" (for distinct counts and for B-STaR's unique selected responses) by
``distinct_by``: ``"text"`` (default) compares completions with whitespace runs collapsed, as the
B-STaR code deduplicates (query, output); ``"extracted"`` compares ``details[i]["extracted"]``
where the judge gave one, else the normalised text.
"""

from __future__ import annotations

import math

from ratchet.evaluate.metrics import pass_at_k  # unbiased, Chen et al. 2021 eq. 1


def balance_n_star(n_target: int, n_prompts: int) -> int:
    """B-STaR's n* = ceil(N / M): N samples wanted for training over M queries (section 9.5)."""
    return math.ceil(n_target / n_prompts)


def _key(text: str, detail: dict | None, distinct_by: str):
    if distinct_by == "extracted" and detail and detail.get("extracted") is not None:
        return ("extracted", str(detail["extracted"]))
    return ("text", " ".join(text.split()))


def _rows(completions: list[dict], judgments: list[dict], distinct_by: str):
    """(keys, scores, correct) per prompt with full ground truth, in completions order."""
    if distinct_by not in ("text", "extracted"):
        raise ValueError(f"distinct_by must be 'text' or 'extracted', got {distinct_by!r}")
    by_id = {j["id"]: j for j in judgments}
    for row in completions:
        judged = by_id.get(row["id"])
        if judged is None:
            raise ValueError(f"completions id {row['id']!r} has no judgment")
        correct = judged.get("correct") or []
        if len(correct) != len(row["completions"]) or any(c is None for c in correct) or not correct:
            continue
        details = judged.get("details") or [None] * len(correct)
        keys = [_key(c["text"], d, distinct_by) for c, d in zip(row["completions"], details)]
        yield keys, judged["scores"], [bool(c) for c in correct]


def balance_one(keys: list, scores: list[float], correct: list[bool], *, threshold: float, n_star: int) -> float:
    """B-STaR balance score of one query (eq. 3): bs = min(n'/n*, 1) * n'/n, where n = number of
    unique responses selected (score > ``threshold``, the reward filter tau) and n' = the unique
    correct ones among them. n = 0 gives 0 (eq. 3's limit; the B-STaR code instead drops such
    queries from the mean)."""
    selected: dict = {}
    for key, s, ok in zip(keys, scores, correct):
        if s > threshold:
            selected.setdefault(key, ok)
    n, n_good = len(selected), sum(selected.values())
    return 0.0 if n == 0 else min(n_good / n_star, 1.0) * n_good / n


def balance_score(completions: list[dict], judgments: list[dict], *, threshold: float = 0.5, n_star: int = 8,
                  distinct_by: str = "text") -> float | None:
    """Mean ``balance_one`` over queries with ground truth (None if there are none). n* = 8 is
    the B-STaR code's constant; pass ``balance_n_star(N, M)`` for the paper's ceil(N/M)."""
    values = [balance_one(*r, threshold=threshold, n_star=n_star) for r in _rows(completions, judgments, distinct_by)]
    return sum(values) / len(values) if values else None


def _top_correct(scores: list[float], correct: list[bool]) -> float:
    """Correctness of the judge's top-scored pick; ties at the top count as a random pick."""
    top = max(scores)
    tied = [ok for s, ok in zip(scores, correct) if s == top]
    return sum(tied) / len(tied)


def bstar_metrics(completions: list[dict], judgments: list[dict], *, pairs_kept: int | None = None,
                  k: int | None = None, threshold: float = 0.5, n_star: int = 8, distinct_by: str = "text") -> dict:
    """One round's B-STaR monitoring (docs/algorithms.md section 9.5, "Monitoring metrics"), means over prompts:

    - ``pass_at_1``: fraction of samples correct (c/n per prompt).
    - ``pass_at_k``: unbiased pass@k with ``k`` = the fewest samples any prompt has, unless given.
    - ``distinct_correct``: unique correct samples per prompt (exploration; Pass@K-S counts these).
    - ``distinct_answers``: unique samples per prompt, correct or not, by ``distinct_by``.
    - ``best_of_k``: correctness of the judge's top-scored sample (B-STaR's Best-of-K, exploitation).
    - ``judge_discrimination``: best_of_k / pass@n = the fraction of prompts with at least one
      correct sample on which the judge's top pick is correct (None if no prompt has one).
    - ``judge_agreement``: ``best_of_k`` under the name self-rewarding reads it by: how often the
      training judge's own pick (a self-rewarding LLM judge, a reward model) is verified correct,
      its agreement with the task's verifier (the loop's ``verified.jsonl``). The same number.
    - ``judge_pick_vs_random``: ``best_of_k - pass_at_1``: how much better the judge's pick is than
      a uniformly random sample of the prompt (0: the judge picks no better than chance).
    - ``balance_score``: ``balance_score`` above, with ``threshold`` and ``n_star``.
    - ``pairs_kept``: as given by the caller.
    """
    stats = list(_rows(completions, judgments, distinct_by))
    out = {"prompts": len(stats), "k": None, "pass_at_1": None, "pass_at_k": None, "distinct_correct": None,
           "distinct_answers": None, "best_of_k": None, "judge_discrimination": None, "judge_agreement": None,
           "judge_pick_vs_random": None, "balance_score": None, "pairs_kept": pairs_kept}
    if not stats:
        return out
    k = k or min(len(keys) for keys, _, _ in stats)
    mean = lambda xs: sum(xs) / len(stats)  # noqa: E731
    solvable = [(s, c) for _, s, c in stats if any(c)]
    out.update(
        k=k,
        pass_at_1=mean([sum(c) / len(c) for _, _, c in stats]),
        pass_at_k=mean([pass_at_k(len(c), sum(c), k) for _, _, c in stats]),
        distinct_correct=mean([len({key for key, ok in zip(keys, c) if ok}) for keys, _, c in stats]),
        distinct_answers=mean([len(set(keys)) for keys, _, _ in stats]),
        best_of_k=mean([_top_correct(s, c) for _, s, c in stats]),
        judge_discrimination=(sum(_top_correct(s, c) for s, c in solvable) / len(solvable)) if solvable else None,
        balance_score=mean([balance_one(*r, threshold=threshold, n_star=n_star) for r in stats]),
    )
    out.update(judge_agreement=out["best_of_k"], judge_pick_vs_random=out["best_of_k"] - out["pass_at_1"])
    return out


def choose_temperature(candidates: dict[float, tuple[list[dict], list[dict]]], *, threshold: float = 0.5,
                       n_star: int = 8, distinct_by: str = "text") -> float:
    """The temperature whose samples have the highest ``balance_score`` (B-STaR's adaptation,
    docs/algorithms.md section 9.5: grid-search on a small query subset, then sample the full set with the winner).
    ``candidates`` maps temperature -> (completions rows, judgments rows) sampled at it; ties go
    to the lowest temperature. Only the temperature is searched; ``threshold`` is fixed."""
    scored = {t: balance_score(c, j, threshold=threshold, n_star=n_star, distinct_by=distinct_by)
              for t, (c, j) in candidates.items()}
    scored = {t: s for t, s in scored.items() if s is not None}
    if not scored:
        raise ValueError("choose_temperature: no candidate has prompts with ground truth")
    return max(sorted(scored), key=lambda t: scored[t])
