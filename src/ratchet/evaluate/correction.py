"""Self-correction metrics of two attempts per problem (SCoRe, Kumar et al. 2024; docs/algorithms.md section 9.4). Pure.

Accuracy at attempt 1 and attempt 2, their difference Delta(t1, t2), and the fractions of problems
that go wrong -> right (Delta_{i->c}) and right -> wrong (Delta_{c->i}), as the paper reports them.
"""

from __future__ import annotations


def correction_metrics(first: list[bool], second: list[bool]) -> dict:
    """Metrics of ``first[i]`` / ``second[i]``: whether problem i is right at attempt 1 / attempt 2."""
    if len(first) != len(second) or not first:
        raise ValueError(f"need the same non-zero number of first and second attempts, got {len(first)} and "
                         f"{len(second)}")
    n = len(first)
    t1, t2 = sum(first) / n, sum(second) / n
    return {"accuracy_t1": t1, "accuracy_t2": t2, "delta_t1_t2": t2 - t1,
            "wrong_to_right": sum(not a and b for a, b in zip(first, second)) / n,
            "right_to_wrong": sum(a and not b for a, b in zip(first, second)) / n, "n": n}
