"""The built-in ``arithmetic`` task: seeded short word problems over integer arithmetic.

A problem is a prompt record (a row of prompts.jsonl):
``{"id": "arith-<hash>", "task": "arithmetic", "messages": [...], "answer": "42"}``.

Train and held-out splits are disjoint by construction: a problem belongs to the held-out split iff
a hash of its text falls in the held-out bucket, so no seed or count can make the splits overlap.
This module knows nothing of models or training.

``steps`` sets how many operations a problem takes: 1 is the original mix (one operation, a quarter
of them the ``two_step`` kind), unchanged byte for byte for a seed; 2 and 3 are word problems that
chain exactly that many operations (``+ - x /``, division only when exact), so an answer line in
the right format is not enough to score.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

# Measured on SmolLM2-135M-Instruct, 64 held-out problems, greedy: this wording 0.31 accuracy,
# "Reply with only the final line 'Answer: <number>'." 0.30, a one-shot worked example 0.03 (the
# model copies the example), the first version ("Solve the problem. End your reply with ...") 0.14.
INSTRUCTION = "Write the calculation in one line, then a last line 'Answer: <number>'."
STOP = ("\n\n",)
"""Stop strings for sampling: a blank line ends the answer paragraph; what follows is rambling."""
HELDOUT_BUCKETS = 5  # one problem in five (by hash) is held out

Problem = tuple[str, int]  # (question text, integer answer)

_NAMES = ["Tom", "Ana", "Li", "Sam", "Maya", "Omar", "Eva", "Ben", "Nia", "Raj"]
_THINGS = ["apples", "books", "coins", "stamps", "marbles", "cards", "pens", "shells"]


def _add(r: random.Random) -> Problem:
    name, thing = r.choice(_NAMES), r.choice(_THINGS)
    a, b = r.randint(2, 60), r.randint(2, 40)
    return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b


def _sub(r: random.Random) -> Problem:
    name, thing = r.choice(_NAMES), r.choice(_THINGS)
    a = r.randint(10, 80)
    b = r.randint(1, a - 1)
    return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b


def _mul(r: random.Random) -> Problem:
    thing = r.choice(_THINGS)
    a, b = r.randint(2, 9), r.randint(2, 12)
    return f"There are {a} boxes with {b} {thing} in each box. How many {thing} are there in total?", a * b


def _two_step(r: random.Random) -> Problem:
    name, thing = r.choice(_NAMES), r.choice(_THINGS)
    a, b = r.randint(5, 40), r.randint(2, 20)
    c = r.randint(1, a + b - 1)
    q = f"{name} has {a} {thing}, buys {b} more, then gives {c} to a friend. How many {thing} does {name} have?"
    return q, a + b - c


GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "two_step": _two_step,
}


STEPS = (1, 2, 3)
"""Allowed ``steps``: operations per problem."""


def _divisors(value: int) -> list[int]:
    return [d for d in range(2, 7) if value % d == 0]


def _clause(r: random.Random, name: str, thing: str, value: int, left: int) -> tuple[str, int, int]:
    """One sentence that changes ``value``: (text, new value, operations it takes), using at most ``left``."""
    kinds = ["add", "sub"] if value >= 3 else ["add"]  # gives 2 or more: plural nouns, something left
    if left >= 2:
        kinds.append("packs")  # two operations in one sentence: m x p, then + that
    kind = r.choice(kinds)
    if kind == "add":
        b = r.randint(2, 30)
        return f"{name} finds {b} more {thing}.", value + b, 1
    if kind == "sub":
        b = r.randint(2, value - 1)
        return f"{name} gives {b} {thing} to a friend.", value - b, 1
    m, k = r.randint(2, 5), r.randint(2, 10)
    return f"{name} buys {m} packs with {k} {thing} in each pack.", value + m * k, 2


def _multi_step(r: random.Random, steps: int) -> Problem:
    """A word problem of exactly ``steps`` operations: a start (``a`` things, or ``a`` boxes of ``b``:
    one multiplication), sentences that add, take away or buy packs, and a question that may share
    the total equally (one exact division)."""
    name, thing = r.choice(_NAMES), r.choice(_THINGS)
    if r.random() < 0.5:
        a, b = r.randint(2, 6), r.randint(2, 9)
        sentences, value, used = [f"{name} has {a} boxes with {b} {thing} in each box."], a * b, 1
    else:
        a = r.randint(5, 40)
        sentences, value, used = [f"{name} has {a} {thing}."], a, 0
    while used < steps:
        left = steps - used
        if left == 1 and _divisors(value) and r.random() < 0.4:
            d = r.choice(_divisors(value))
            sentences.append(f"{name} shares all the {thing} equally among {d} friends. "
                             f"How many {thing} does each friend get?")
            return " ".join(sentences), value // d
        text, value, n_ops = _clause(r, name, thing, value, left)
        sentences.append(text)
        used += n_ops
    sentences.append(f"How many {thing} does {name} have now?")
    return " ".join(sentences), value


# Problems worded as the training prompts never are (issue 21: does a gain hold beyond the phrasing
# it was trained on?). Same operations and number ranges as GENERATORS, other sentences, names and
# objects; none of the training templates' phrases ("has", "gets ... more", "gives away", "boxes with",
# "buys ... more") occurs. They are drawn by ``make_unseen_problems`` only, never by the task.
_UNSEEN_NAMES = ["Zoe", "Kai", "Ivy", "Leo", "Mia", "Noah"]
_UNSEEN_THINGS = ["pencils", "stickers", "buttons", "seashells", "tickets", "beads"]


def _unseen_add(r: random.Random) -> Problem:
    thing, a, b = r.choice(_UNSEEN_THINGS), r.randint(2, 60), r.randint(2, 40)
    return f"A jar holds {a} {thing}. Someone drops another {b} {thing} into it. What is the count in the jar?", a + b


def _unseen_sub(r: random.Random) -> Problem:
    thing, a = r.choice(_UNSEEN_THINGS), r.randint(10, 80)
    b = r.randint(1, a - 1)
    return f"A bag held {a} {thing}, and {b} of them were taken out. What number remain in the bag?", a - b


def _unseen_mul(r: random.Random) -> Problem:
    name, thing = r.choice(_UNSEEN_NAMES), r.choice(_UNSEEN_THINGS)
    a, b = r.randint(2, 9), r.randint(2, 12)
    return f"{name} orders {a} packets of {thing}; every packet contains {b}. What total did {name} order?", a * b


def _unseen_two_step(r: random.Random) -> Problem:
    name, thing = r.choice(_UNSEEN_NAMES), r.choice(_UNSEEN_THINGS)
    a, b = r.randint(5, 40), r.randint(2, 20)
    c = r.randint(1, a + b - 1)
    return (f"{name} started the day with {a} {thing}, was handed {b} at lunch and lost {c} on the way home. "
            f"What does {name} end the day with?"), a + b - c


UNSEEN_GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _unseen_add, "sub": _unseen_sub, "mul": _unseen_mul, "two_step": _unseen_two_step}


def make_unseen_problems(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct problems in the unseen wordings (the same mix of kinds as ``make_problems``),
    as prompt records with the task's instruction line, deterministic in ``seed``."""
    r = random.Random(f"arithmetic-unseen/{seed}")
    out, seen = [], set()
    while len(out) < n:
        question, answer = UNSEEN_GENERATORS[r.choice(list(UNSEEN_GENERATORS))](r)
        if question not in seen:
            seen.add(question)
            out.append(_record(question, answer))
    return out


def _is_heldout(question: str) -> bool:
    digest = hashlib.sha256(question.encode()).digest()
    return digest[0] % HELDOUT_BUCKETS == 0


def _record(question: str, answer: int) -> dict:
    pid = "arith-" + hashlib.sha256(question.encode()).hexdigest()[:12]
    content = f"{question}\n{INSTRUCTION}"
    return {"id": pid, "task": "arithmetic", "messages": [{"role": "user", "content": content}],
            "answer": str(answer)}


def make_problems(n: int, *, split: str, seed: int = 0, kinds: tuple[str, ...] | None = None,
                  steps: int = 1) -> list[dict]:
    """``n`` distinct problems of ``split`` ("train" or "heldout"), deterministic in ``seed``.
    ``kinds`` (default: all of ``GENERATORS``) chooses among the one-step kinds (``steps`` 1 only)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if steps not in STEPS:
        raise ValueError(f"steps: expected one of {list(STEPS)}, got {steps!r}")
    if kinds is not None and steps != 1:
        raise ValueError(f"kinds: only for steps=1 (the one-step kinds); got kinds with steps={steps}")
    kinds = tuple(GENERATORS) if kinds is None else kinds
    unknown = set(kinds) - set(GENERATORS)
    if unknown:
        raise ValueError(f"unknown arithmetic kinds {sorted(unknown)}; expected some of {sorted(GENERATORS)}")
    r = random.Random(f"arithmetic/{seed}")
    if steps == 1:  # draws exactly as before ``steps`` existed: the same problems for a seed
        draw = lambda: GENERATORS[r.choice(kinds)](r)  # noqa: E731
    else:
        draw = lambda: _multi_step(r, steps)  # noqa: E731
    want_heldout = split == "heldout"
    seen: set[str] = set()
    out: list[dict] = []
    for _ in range(1000 * n + 1000):  # the problem space is large; this bound only guards a bug
        if len(out) == n:
            return out
        question, answer = draw()
        if question in seen or _is_heldout(question) != want_heldout:
            continue
        seen.add(question)
        out.append(_record(question, answer))
    raise RuntimeError(f"could not draw {n} distinct {split} problems (got {len(out)})")
