"""Pair building: judged completions -> preference pairs (and unpaired KTO examples). Pure Python.

Judges output scores; this module alone decides what becomes a training example. It knows
nothing of models, tokenizers or losses. Section numbers below refer to
``docs/algorithms.md`` (section 10 there lists the strategies).

Pair strategies. Each is one function ``(completions_row, judgments_row, *, max_pairs, rng,
**params) -> list[pair]`` in the hand-written ``STRATEGIES`` dict; its extra parameters are
keyword-only with defaults, and ``build_pairs(..., **strategy_params)`` passes them on (an unknown
name is an error). A pair row is ``{"id", "messages", "chosen", "rejected", "chosen_score",
"rejected_score", "chosen_complete", "rejected_complete"}`` (``data.records``).

Inputs some strategies need beyond the common rows:

- ``gold_vs_samples`` (DNO): the prompt row's ``gold`` (a full reference response) or, failing
  that, its ``answer``; ``completions.jsonl`` rows carry every prompt field.
- ``dstc``: the completions row holds the J code samples in ``completions`` and the K parsed
  tests (``judge.dstc.parse_tests``) in ``row["tests"]: list[str]``; the judgments row holds the
  pass matrix one code sample per detail: ``judged["details"][j]["passed"]: list[bool]``, K
  entries, ``[k]`` = code j passes test k (``judge.dstc.DSTCJudge``), and per-code ``scores``.

SPPO's rows (objectives whose ``LossSpec.data`` is ``scored``) are pairs with each sample's win
rate against the prompt's other samples added by ``attach_win_rates``.

Unpaired examples for KTO (section 2.5) come from ``build_unpaired`` with a labeller from
``LABELLERS``, or from ``unpaired_from_pairs`` (a pair split into a desirable and an undesirable
example). An unpaired row is ``{"id", "messages", "completion", "label": bool, "complete": bool}``.
"""

from __future__ import annotations

import inspect
import math
import random
from typing import Callable

from ratchet.data.records import RecordError

_FINISHED = ("stop", "eos")


def is_complete(completion: dict) -> bool:
    # a completion cut by max_new_tokens must not be taught to end there
    return completion.get("finish_reason") in _FINISHED


def _pair(row: dict, scores: list[float], i: int, j: int) -> dict:
    c, r = row["completions"][i], row["completions"][j]
    return {
        "id": row["id"], "messages": row["messages"],
        "chosen": c["text"], "rejected": r["text"],
        "chosen_score": scores[i], "rejected_score": scores[j],
        "chosen_complete": is_complete(c), "rejected_complete": is_complete(r),
    }


def distinct(indices: list[int], texts: list[str]) -> list[int]:
    """``indices`` in order, without any whose text (``texts[i]``) an earlier one already has:
    a repeated sample is one example, not several (RFT dedups reasoning paths)."""
    seen, out = set(), []
    for i in indices:
        if texts[i] not in seen:
            seen.add(texts[i])
            out.append(i)
    return out


def completion_texts(row: dict) -> list[str]:
    """The texts of a completions row's samples, in sample order."""
    return [c["text"] for c in row["completions"]]


def correctness(judged: dict) -> list[bool | None]:
    """Per-completion correctness; ``None`` = unknown (e.g. a sandbox error), never paired."""
    return judged.get("correct") or [s > 0.5 for s in judged["scores"]]


def _split(labels: list[bool | None], texts: list[str]) -> tuple[list[int], list[int]]:
    """Indices labelled true and false (``None`` in neither), each without repeated texts."""
    good = distinct([i for i, ok in enumerate(labels) if ok is not None and ok], texts)
    bad = distinct([i for i, ok in enumerate(labels) if ok is not None and not ok], texts)
    return good, bad


def drop_truncated(completions: list[dict], judgments: list[dict]) -> tuple[list[dict], list[dict]]:
    """Remove every completion cut by ``max_new_tokens`` (``finish_reason == "length"``) from its
    row, and its entries from the matching judgments row (every per-completion list), so no
    strategy, labeller or selection sees it.

    Why: a cut answer is not an answer. As a rejected one it teaches the objective that ending the
    turn is what separates good from bad (chosen answers end with the end-of-turn token, cut ones
    do not); as a chosen one it is right by luck (the judge reads the last number of a fragment).
    Measured on the arithmetic task with SmolLM2-135M: in round 2 of DPO, 89 of 154 rejected
    answers were cut, and greedy held-out accuracy fell from 0.300 to 0.055 because the model
    learned to stop after one sentence. A completion without ``finish_reason`` is kept; a prompt
    left with no completion is left out."""
    judged_by_id = {j["id"]: j for j in judgments}
    rows_out, judged_out = [], []
    for row in completions:
        keep = [i for i, c in enumerate(row["completions"]) if c.get("finish_reason") != "length"]
        n = len(row["completions"])
        if not keep:
            continue  # nothing left to compare or select
        rows_out.append({**row, "completions": [row["completions"][i] for i in keep]})
        judged = judged_by_id.get(row["id"])
        if judged is not None:
            judged_out.append({k: [v[i] for i in keep] if isinstance(v, list) and len(v) == n else v
                               for k, v in judged.items()})
    return rows_out, judged_out


# --- strategies -------------------------------------------------------------------------------


def correct_vs_incorrect(row: dict, judged: dict, *, max_pairs: int, rng: random.Random) -> list[dict]:
    """Pairs of a correct and an incorrect completion of the same prompt (distinct texts),
    at most ``max_pairs`` drawn at random from all correct x incorrect combinations. Completions
    whose correctness is unknown (``None``) take no part."""
    texts, correct = completion_texts(row), correctness(judged)
    good, bad = _split(correct, texts)
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


def best_vs_random(row: dict, judged: dict, *, max_pairs: int, rng: random.Random) -> list[dict]:
    """The highest-scored completion against up to ``max_pairs`` random other completions with a
    strictly lower score (distinct texts): the UltraFeedback pairing used by RA (docs/algorithms.md section 5 (b) 1:
    the highest-scored completion is chosen, a random other one rejected)."""
    scores, texts = judged["scores"], completion_texts(row)
    best = max(range(len(scores)), key=lambda i: (scores[i], rng.random()), default=None)
    if best is None:
        return []
    lower = distinct([j for j in range(len(scores)) if scores[j] < scores[best]], texts)
    rng.shuffle(lower)
    return [_pair(row, scores, best, j) for j in lower[:max_pairs]]


def score_margin(row: dict, judged: dict, *, max_pairs: int, rng: random.Random,
                 margin: float = 0.5) -> list[dict]:
    """Every pair of distinct completions whose score difference is at least ``margin``, at most
    ``max_pairs`` drawn at random. DNO keeps only such "large-margin" pairs (section 7.3 (b):
    negatives >= 2 points below the positive on a 6-point rubric); ``margin`` must be > 0."""
    if margin <= 0:
        raise ValueError(f"score_margin: margin must be > 0, got {margin}")
    scores, texts = judged["scores"], completion_texts(row)
    idx = distinct(list(range(len(scores))), texts)
    combos = [(i, j) for i in idx for j in idx if scores[i] - scores[j] >= margin]
    rng.shuffle(combos)
    return [_pair(row, scores, i, j) for i, j in combos[:max_pairs]]


def rso_sample(scores: list[float], num_samples: int, beta: float, rng: random.Random) -> list[int]:
    """Statistical rejection sampling toward pi_r(y|x) ∝ pi_sft(y|x) exp(r(x,y)/beta) (RSO,
    arXiv 2309.06657, Algorithm 1; section 8). The candidates are samples of pi_sft; repeat until
    ``num_samples`` are accepted or none is left: r_max = the highest reward still in the pool,
    then accept each remaining candidate with probability exp((r - r_max)/beta) and remove it.
    Returns indices in order of acceptance. beta -> 0 gives the top-m (in reward order);
    beta -> inf accepts uniformly (the pool is shuffled first, so it is a random m-subset)."""
    pool = list(range(len(scores)))
    rng.shuffle(pool)
    accepted: list[int] = []
    while pool and len(accepted) < num_samples:
        r_max = max(scores[i] for i in pool)
        for i in list(pool):
            ratio = 1.0 if scores[i] == r_max else math.exp((scores[i] - r_max) / beta)
            if rng.random() < ratio:
                accepted.append(i)
                pool.remove(i)
                if len(accepted) == num_samples:
                    break
    return accepted


def rso(row: dict, judged: dict, *, max_pairs: int, rng: random.Random, beta: float = 0.5,
        num_samples: int = 8) -> list[dict]:
    """RSO pairs (section 8, "Pair construction"): rejection-sample ``num_samples`` of the distinct
    completions with ``rso_sample`` (beta is the sampling beta, 0.5 in the paper; the judge's
    scores are the rewards r), then "first-round" pairing of the accepted samples in acceptance
    order, (1,2), (3,4), ... (the TRL PR #902 default), each labelled by score: the higher is
    chosen, equal scores make no pair. At most ``max_pairs``."""
    if beta <= 0 or num_samples < 2:
        raise ValueError(f"rso: need beta > 0 and num_samples >= 2, got beta={beta}, num_samples={num_samples}")
    scores = judged["scores"]
    idx = distinct(list(range(len(scores))), completion_texts(row))
    accepted = [idx[a] for a in rso_sample([scores[i] for i in idx], num_samples, beta, rng)]
    pairs = []
    for a, b in zip(accepted[0::2], accepted[1::2]):
        if scores[a] != scores[b]:
            hi, lo = (a, b) if scores[a] > scores[b] else (b, a)
            pairs.append(_pair(row, scores, hi, lo))
    return pairs[:max_pairs]


def gold_vs_samples(row: dict, judged: dict, *, max_pairs: int, rng: random.Random, gold_template: str = "{gold}",
                    gold_score: float = 1.0, margin: float = 0.5) -> list[dict]:
    """DNO-Prct pairs against a reference (arXiv 2404.03715, Algorithm 2; section 7.3 (a') 1-4):
    the gold response is chosen, the model's worse samples rejected. Gold text =
    ``gold_template.format(gold=row["gold"])`` (a full reference response), else
    ``row["answer"]`` the same way (e.g. ``"Answer: {gold}"`` for a bare number). Rejected: distinct
    samples scoring <= ``gold_score - margin``, the lowest first (ties at random), at most
    ``max_pairs``. Unlike DNO, a sample that beats the gold is never made the chosen one."""
    gold = row.get("gold", row.get("answer"))
    if gold is None:
        raise RecordError(f"gold_vs_samples: prompt {row['id']!r} has neither 'gold' nor 'answer'")
    scores, texts = judged["scores"], completion_texts(row)
    gold_text = gold_template.format(gold=gold)
    worse = [j for j in range(len(scores)) if scores[j] <= gold_score - margin and texts[j] != gold_text]
    worse = distinct(sorted(worse, key=lambda j: (scores[j], rng.random())), texts)
    return [{"id": row["id"], "messages": row["messages"], "chosen": gold_text, "rejected": texts[j],
             "chosen_score": gold_score, "rejected_score": scores[j],
             "chosen_complete": True, "rejected_complete": is_complete(row["completions"][j])}
            for j in worse[:max_pairs]]


def dno(row: dict, judged: dict, *, max_pairs: int, rng: random.Random, gold_template: str = "{gold}",
        gold_score: float = 1.0, margin: float = 0.5) -> list[dict]:
    """DNO-Prct pairs (Rosset et al. 2024, arXiv 2404.03715, Algorithm 2 steps 2-4; section 7.3):
    the candidates are the prompt's distinct samples plus its gold response (``gold_template``
    filled with ``row["gold"]``, else ``row["answer"]``; scored ``gold_score``, since the judge
    saw only the samples), ranked by score. Chosen = the best candidate (the gold on a tie: it
    is the reference response); rejected = every other candidate at least ``margin`` below it
    (the large-margin filter), the lowest first (ties at random), at most ``max_pairs``. A
    prompt with no such candidate makes no pair. Unlike ``gold_vs_samples``, a sample the judge
    scores above ``gold_score`` is the chosen one and the gold may be rejected."""
    if margin <= 0:
        raise ValueError(f"dno: margin must be > 0, got {margin}")
    gold = row.get("gold", row.get("answer"))
    if gold is None:
        raise RecordError(f"dno: prompt {row['id']!r} has neither 'gold' nor 'answer'")
    texts, scores = completion_texts(row), list(judged["scores"])
    gold_text = gold_template.format(gold=gold)
    cands = [(gold_text, float(gold_score), True)] + [(texts[j], scores[j], is_complete(row["completions"][j]))
                                                     for j in distinct(list(range(len(texts))), texts)
                                                     if texts[j] != gold_text]
    best = max(range(len(cands)), key=lambda i: (cands[i][1], i == 0))  # gold first on a tie
    worse = sorted((i for i in range(len(cands)) if cands[i][1] <= cands[best][1] - margin),
                   key=lambda i: (cands[i][1], rng.random()))
    (c_text, c_score, c_done) = cands[best]
    return [{"id": row["id"], "messages": row["messages"], "chosen": c_text, "rejected": cands[i][0],
             "chosen_score": c_score, "rejected_score": cands[i][1], "chosen_complete": c_done,
             "rejected_complete": cands[i][2]} for i in worse[:max_pairs]]


DSTC_CONCAT = "{code}\n\n{test}"
"""How DSTC joins a code sample and a test into one response (section 6, "Test-code
concatenation"; the exact format is not published: ``code`` is the completion text as sampled,
``test`` one parsed test)."""


def dstc_select(matrix: list[list[bool]]) -> tuple[int, int, int, int] | None:
    """DSTC's minimax selection (arXiv 2411.13611; docs/algorithms.md section 6 (a)) on r[j][k] = code j passes test k:
    chosen code j' = argmax_j sum_k r[j][k]; chosen test k' = argmin_k sum_j r[j][k] with
    r[j'][k] = 1 (the strictest test j' passes); rejected test k* = argmax_k sum_j r[j][k] with
    sum_j r[j][k] < J (the most lenient test some code fails); rejected code j* [D] = a code with
    r[j][k*] = 0 and j != j', fewest total passes. Ties go to the lowest index. Returns
    (j', k', j*, k*), or None when no such choice exists (all pass all, no discriminating test,
    j' passes nothing, or j' is the only code failing k*)."""
    J, K = len(matrix), len(matrix[0]) if matrix else 0
    if J < 2 or K == 0:
        return None
    row_sum = [sum(map(bool, r)) for r in matrix]
    col_sum = [sum(bool(matrix[j][k]) for j in range(J)) for k in range(K)]
    j_c = max(range(J), key=lambda j: (row_sum[j], -j))
    passed = [k for k in range(K) if matrix[j_c][k]]
    lenient = [k for k in range(K) if col_sum[k] < J]
    if not passed or not lenient:
        return None
    k_c = min(passed, key=lambda k: (col_sum[k], k))
    k_r = max(lenient, key=lambda k: (col_sum[k], -k))
    failing = [j for j in range(J) if not matrix[j][k_r] and j != j_c]
    if not failing:
        return None
    j_r = min(failing, key=lambda j: (row_sum[j], j))
    return j_c, k_c, j_r, k_r


def dstc(row: dict, judged: dict, *, max_pairs: int, rng: random.Random, concat: str = DSTC_CONCAT) -> list[dict]:
    """One DSTC pair per prompt (section 6): chosen = code j' + test k', rejected = code j* + test
    k* (``dstc_select``), joined with ``concat``. Scores are the codes' fractions of tests passed.
    Needs ``row["tests"]`` and ``judged["details"][j]["passed"]`` (see the module docstring)."""
    details = judged.get("details") or []
    if "tests" not in row or not details or not all(isinstance(d, dict) and "passed" in d for d in details):
        raise RecordError(f"dstc: prompt {row['id']!r} needs row['tests'] and judged['details'][j]['passed'] "
                         "(the dstc judge's pass matrix)")
    matrix, tests, codes = [d["passed"] for d in details], row["tests"], row["completions"]
    if len(matrix) != len(codes) or any(len(r) != len(tests) for r in matrix):
        raise RecordError(f"dstc: prompt {row['id']!r}: the pass matrix must be {len(codes)} codes x "
                         f"{len(tests)} tests")
    picked = dstc_select(matrix)
    if picked is None or max_pairs < 1:
        return []
    j_c, k_c, j_r, k_r = picked
    frac = [sum(map(bool, r)) / len(tests) for r in matrix]
    return [{"id": row["id"], "messages": row["messages"],
             "chosen": concat.format(code=codes[j_c]["text"], test=tests[k_c]),
             "rejected": concat.format(code=codes[j_r]["text"], test=tests[k_r]),
             "chosen_score": frac[j_c], "rejected_score": frac[j_r],
             "chosen_complete": is_complete(codes[j_c]), "rejected_complete": is_complete(codes[j_r])}]


RA_TEMPLATES: dict[str, str] = {
    # the RA paper's system prompt s(g), verbatim (section 5 (b) 3; shenao-zhang/reward-augmented-preference)
    "paper": ("You are an assistant that generates responses for the instruction while implicitly achieving the "
              "following target scores (on a scale of 1-10, where 1 is lowest and 10 is highest):\n"
              "Overall score: {score}."),
    # the same for judges that score in [0, 1] (ratchet's answer and code judges)
    "unit": ("You are an assistant that generates responses for the instruction while implicitly achieving the "
             "following target scores (on a scale of 0-1, where 0 is lowest and 1 is highest):\n"
             "Overall score: {score}."),
}
"""Goal prompts for ``reward_augmented``; ``{score}`` is replaced by the target score."""
RA_SCALES: dict[str, tuple[float, float]] = {"paper": (1, 10), "unit": (0, 1)}
"""The score range each bundled goal prompt states; its top is the goal at inference."""


def _goal_messages(messages: list[dict], goal: str, goal_in: str) -> list[dict]:
    """``goal`` as the system prompt (or in front of an existing one), or, for ``goal_in="user"``
    (RA's ``_nosys`` variant), ``goal + "\\n\\n"`` in front of the first user turn."""
    out = [dict(m) for m in messages]
    if goal_in == "system":
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{goal}\n\n{out[0]['content']}"
            return out
        return [{"role": "system", "content": goal}] + out
    first_user = next(i for i, m in enumerate(out) if m["role"] == "user")
    out[first_user]["content"] = f"{goal}\n\n{out[first_user]['content']}"
    return out


def _format_score(score: float) -> str:
    return str(int(score)) if float(score).is_integer() else f"{score:g}"  # RA prints integers bare


def _check_scale(template: str, score: float, prompt_id) -> None:
    """A score the goal prompt's stated scale cannot hold would teach a goal that means something
    else (a correct answer's 1 is the *lowest* score on the paper's 1-10 scale)."""
    if template in RA_SCALES and not RA_SCALES[template][0] <= score <= RA_SCALES[template][1]:
        lo, hi = RA_SCALES[template]
        raise ValueError(f"reward_augmented: prompt {prompt_id!r}: score {score:g} lies outside template "
                         f"{template!r}'s scale {lo:g}-{hi:g}; use template 'unit' for 0-1 judges, 'paper' for "
                         "1-10 scores, or a template of your own")


def goal_messages(messages: list[dict], score: float, *, template: str = "unit", goal_in: str = "system") -> list[dict]:
    """``messages`` conditioned on the goal ``score`` exactly as ``reward_augmented`` conditions its
    rows (the held-out evaluation asks for ``inference_goal``)."""
    return _goal_messages(messages, RA_TEMPLATES.get(template, template).format(score=_format_score(score)), goal_in)


def inference_goal(template: str = "unit", top_score: float | None = None) -> float:
    """The goal score at inference: RA conditions on the highest score (arXiv 2410.08067, section 4;
    the paper's "Overall score: 10"). ``top_score`` if given, else the top of a bundled template's scale."""
    if top_score is not None:
        return top_score
    if template in RA_SCALES:
        return RA_SCALES[template][1]
    raise ValueError("reward_augmented: a template of your own needs top_score (pair.params.top_score: the goal "
                     "score the model is asked for at evaluation)")


def reward_augmented(row: dict, judged: dict, *, max_pairs: int, rng: random.Random, base: str = "best_vs_random",
                     template: str = "unit", goal_in: str = "system", top_score: float | None = None) -> list[dict]:
    """Reward-augmented relabelling (RA, arXiv 2410.08067, Fig. 1; section 5 (b) 3): every pair of
    the ``base`` strategy (at most ``max_pairs``) becomes two rows, so up to 2 * max_pairs:
    (s(r_w) + x, chosen=y_w, rejected=y_l) and (s(r_l) + x, chosen=y_l, rejected=y_w), the
    responses swapped in the loser's copy as in the paper (not as in the repo's ``_nosys`` code).
    ``template`` is a key of ``RA_TEMPLATES`` (``unit``, the default, for ratchet's 0-1 judges;
    ``paper`` for 1-10 scores) or a string with ``{score}``; a score outside a bundled template's
    scale is an error naming the prompt. ``goal_in`` is ``"system"`` or ``"user"``. ``top_score``:
    the goal asked for at evaluation (default: the top of the template's scale; ``inference_goal``)."""
    if base not in STRATEGIES or base == "reward_augmented":
        raise ValueError(f"reward_augmented: base must be another strategy of {sorted(STRATEGIES)}, got {base!r}")
    if goal_in not in ("system", "user"):
        raise ValueError(f"reward_augmented: goal_in must be 'system' or 'user', got {goal_in!r}")
    text = RA_TEMPLATES.get(template, template)
    if "{score}" not in text:
        raise ValueError(f"reward_augmented: template must be one of {sorted(RA_TEMPLATES)} or contain '{{score}}'")
    inference_goal(template, top_score)  # a template of your own must name its goal before training
    out = []
    for p in STRATEGIES[base](row, judged, max_pairs=max_pairs, rng=rng):
        for score, swap in ((p["chosen_score"], False), (p["rejected_score"], True)):
            _check_scale(template, score, row["id"])
            copy = {**p, "messages": goal_messages(p["messages"], score, template=template, goal_in=goal_in)}
            if swap:
                for a, b in (("chosen", "rejected"), ("chosen_score", "rejected_score"),
                             ("chosen_complete", "rejected_complete")):
                    copy[a], copy[b] = p[b], p[a]
            out.append(copy)
    return out


Strategy = Callable[..., list[dict]]
STRATEGIES: dict[str, Strategy] = {
    "correct_vs_incorrect": correct_vs_incorrect,
    "best_vs_worst": best_vs_worst,
    "best_vs_random": best_vs_random,
    "score_margin": score_margin,
    "rso": rso,
    "gold_vs_samples": gold_vs_samples,
    "dno": dno,
    "dstc": dstc,
    "reward_augmented": reward_augmented,
}


def check_params(kind: str, name: str, fn: Callable, params: dict, fixed: tuple[str, ...]) -> None:
    """Raise ValueError if ``params`` names a key that is not one of ``fn``'s keyword-only
    parameters (less ``fixed``, the ones the caller passes itself); ``kind`` and ``name`` say
    what ``fn`` is in the message (e.g. "pair strategy", "rso")."""
    sig = inspect.signature(fn).parameters
    allowed = [p for p, s in sig.items() if s.kind is s.KEYWORD_ONLY and p not in fixed]
    for key in params:
        if key not in allowed:
            raise ValueError(f"{kind} {name!r} has no parameter {key!r}; its parameters: {allowed or 'none'}")


def matched_rows(completions: list[dict], judgments: list[dict]):
    """(row, judged) in completions order; rows are matched by ``id`` (a mismatch is a ``RecordError``)."""
    by_id = {j["id"]: j for j in judgments}
    for n, row in enumerate(completions, start=1):
        judged = by_id.get(row["id"])
        if judged is None:
            raise RecordError(f"completions row {n} (id {row['id']!r}) has no judgment")
        if len(judged["scores"]) != len(row["completions"]):
            raise RecordError(f"id {row['id']!r}: {len(row['completions'])} completions but "
                              f"{len(judged['scores'])} scores")
        yield row, judged


def build_pairs(completions: list[dict], judgments: list[dict], *, strategy: str, max_pairs_per_prompt: int,
                seed: int = 0, counts: dict | None = None, **strategy_params) -> list[dict]:
    """Apply ``strategy`` with ``strategy_params`` to every prompt; rows are matched by ``id``. A
    pair whose chosen text equals its rejected one (two samples alike but scored apart) is dropped:
    it carries no preference, and DPO-style losses sit at log 2 on it. ``counts``, if given, gets
    ``{"identical": how many were dropped}``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; expected one of {sorted(STRATEGIES)}")
    fn = STRATEGIES[strategy]
    check_params("pair strategy", strategy, fn, strategy_params, ("max_pairs", "rng"))
    rng = random.Random(seed)
    pairs = []
    for row, judged in matched_rows(completions, judgments):
        pairs += fn(row, judged, max_pairs=max_pairs_per_prompt, rng=rng, **strategy_params)
    kept = [p for p in pairs if p["chosen"] != p["rejected"]]
    if counts is not None:
        counts["identical"] = len(pairs) - len(kept)
    return kept


# --- win rates (SPPO) --------------------------------------------------------------------------


def win_rates(judged: dict) -> list[float]:
    """SPPO's estimate of P(y_i > pi_t | x) for each of a prompt's samples: the mean over the
    prompt's K samples of P(y_i > y_j), the comparison with itself (1/2) included,
    P_i = (1/K) sum_j P(y_i > y_j) (Wu et al. 2024, arXiv 2405.00675; the authors' uclaml/SPPO
    ``scripts/compute_prob.py``, where P comes from PairRM scores). Here P(y_i > y_j) comes from
    the judgments row:

    - a pairwise judge (``llm`` with ``mode: pairwise``: ``details[i]`` holds ``wins`` and
      ``comparisons`` of its round-robin, both orders combined): (wins_i + 1/2) / (comparisons_i + 1);
    - a verifier (every ``correct`` known): correct beats incorrect, equal verdicts are 1/2 each;
    - any other judge: the higher score wins, equal scores are 1/2 each."""
    details = judged.get("details") or []
    if details and all(isinstance(d, dict) and {"wins", "comparisons"} <= set(d) for d in details):
        return [(d["wins"] + 0.5) / (d["comparisons"] + 1) for d in details]
    correct = judged.get("correct") or []
    known = bool(correct) and all(c is not None for c in correct)
    values = [float(v) for v in (correct if known else judged["scores"])]
    return [sum(1.0 if v > w else 0.5 if v == w else 0.0 for w in values) / len(values) for v in values]


def attach_win_rates(pairs: list[dict], completions: list[dict], judgments: list[dict]) -> list[dict]:
    """Each pair with ``chosen_win_rate`` and ``rejected_win_rate`` (SPPO's P_w and P_l, the
    ``win_rates`` of its two samples). A pair whose text is not one of its prompt's samples (a gold
    response, DSTC's code + test) has no win rate: a ``RecordError`` naming the prompt."""
    rates = {row["id"]: dict(reversed(list(zip(completion_texts(row), win_rates(judged)))))  # a text's first sample
             for row, judged in matched_rows(completions, judgments)}
    out = []
    for p in pairs:
        by_text = rates[p["id"]]
        for side in ("chosen", "rejected"):
            if p[side] not in by_text:
                raise RecordError(f"prompt {p['id']!r}: the {side} text is not one of the prompt's samples, so it has "
                                  "no win rate (SPPO pairs two samples: use a strategy such as best_vs_worst or "
                                  "correct_vs_incorrect)")
        out.append({**p, "chosen_win_rate": by_text[p["chosen"]], "rejected_win_rate": by_text[p["rejected"]]})
    return out


# --- unpaired examples (KTO) ------------------------------------------------------------------


def label_by_correct(row: dict, judged: dict) -> list[bool | None]:
    """Desirable iff the judge says correct; unknown correctness (``None``) is left out."""
    return list(correctness(judged))


def label_by_threshold(row: dict, judged: dict, *, threshold: float = 0.5) -> list[bool | None]:
    """Desirable iff score >= ``threshold`` (B-STaR/RFT-style reward filtering, section 9.5)."""
    return [s >= threshold for s in judged["scores"]]


Labeller = Callable[..., list]
LABELLERS: dict[str, Labeller] = {
    "correct": label_by_correct,
    "threshold": label_by_threshold,
}


def build_unpaired(completions: list[dict], judgments: list[dict], *, labeller: str = "correct",
                   max_per_prompt: int = 4, seed: int = 0, **labeller_params) -> list[dict]:
    """Unpaired KTO rows ``{"id", "messages", "completion", "label", "complete"}`` (section 2.5 (b)).
    Per prompt: label every completion with ``LABELLERS[labeller]``, drop duplicate texts and
    unlabelled ones, then take desirable and undesirable alternately (each in random order), so a
    cap of ``max_per_prompt`` keeps the two classes as balanced as the prompt allows."""
    if labeller not in LABELLERS:
        raise ValueError(f"unknown labeller {labeller!r}; expected one of {sorted(LABELLERS)}")
    fn = LABELLERS[labeller]
    check_params("labeller", labeller, fn, labeller_params, ())
    rng = random.Random(seed)
    rows = []
    for row, judged in matched_rows(completions, judgments):
        labels, texts = fn(row, judged, **labeller_params), completion_texts(row)
        good, bad = _split(labels, texts)
        rng.shuffle(good)
        rng.shuffle(bad)
        order = [i for pair in zip(good, bad) for i in pair] + good[len(bad):] + bad[len(good):]
        rows += [{"id": row["id"], "messages": row["messages"], "completion": texts[i], "label": bool(labels[i]),
                  "complete": is_complete(row["completions"][i])} for i in order[:max_per_prompt]]
    return rows


def unpaired_from_pairs(pairs: list[dict]) -> list[dict]:
    """Split each pair into a desirable (chosen) and an undesirable (rejected) KTO row, as DSTC
    does for KTO (section 6) and KTO allows for any preference data (section 2.5 (b))."""
    return [{"id": p["id"], "messages": p["messages"], "completion": p[side], "label": side == "chosen",
             "complete": p.get(f"{side}_complete", True)} for p in pairs for side in ("chosen", "rejected")]
