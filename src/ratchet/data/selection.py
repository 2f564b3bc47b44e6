"""SFT selection: judged (and self-scored) completions -> the samples to fine-tune on. Pure Python.

Self-taught methods train by maximum likelihood on some of the model's own samples; this module
alone decides which. Each selection is one function ``(completions_row, judgments_row, *,
max_rows, rng, **params) -> list[int]`` (indices into ``row["completions"]``) in the
hand-written ``SELECTIONS`` dict; ``build_sft(..., **params)`` passes extra keyword-only
parameters on (an unknown name is an error). Section numbers refer to
``docs/algorithms.md`` (section 11 there lists the selections).

- ``all_correct``: STaR (Zelikman et al. 2022, arXiv 2203.14465) and rejection-sampling
  fine-tuning (RFT, Yuan et al. 2023, arXiv 2308.01825): every *distinct* correct sample, at most
  ``max_rows`` per prompt (RFT dedups reasoning paths; the cap keeps easy prompts from dominating).
  Also B-STaR's base loop with a verifier reward (section 9.5: keep samples with reward > tau).
- ``best_of_n``: the sample the judge scores highest, one per prompt (ties broken by the seed).
- ``self_loglik``: SFT-sharpening (Huang et al. 2024, arXiv 2412.01951; section 9.6): the
  sample with the highest self-reward r_self(y|x) = log pi_base(y|x), the model's own sequence
  log-likelihood, one per prompt. No judge is read. The log-likelihoods come from a stage that
  has the model (``loop.stages.self_score``) and are attached to each completion as ``logprob``
  (and ``logprob_tokens``) by ``attach_logprobs``.

An SFT row is an unpaired example that is always desirable (``data.pairing.build_unpaired``'s
format, so the trainer reads it as an ``unpaired`` file): ``{"id", "messages", "completion",
"label": true, "complete", "score", "correct", "selection"}`` plus ``logprob`` and
``logprob_tokens`` when the completion was self-scored. ``score``/``correct`` are the judge's,
kept for diagnostics (how often a self-selected sample is right).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ratchet.data.pairing import (check_params, completion_texts, correctness, distinct, is_complete,
                                  matched_rows)
from ratchet.data.records import RecordError


def _argmax(values: list[float], candidates: list[int], rng: random.Random) -> int:
    """The candidate with the highest value; ties are broken at random by ``rng`` (so by the seed)."""
    best = max(values[i] for i in candidates)
    return rng.choice([i for i in candidates if values[i] == best])


def all_correct(row: dict, judged: dict, *, max_rows: int, rng: random.Random) -> list[int]:
    """Every distinct correct completion (STaR / RFT); if there are more than ``max_rows``, a
    random ``max_rows`` of them, in sample order. A prompt with no correct sample gives nothing
    (STaR's rationalisation with the answer as a hint is not done). Unknown correctness
    (``None``) is not correct."""
    good = distinct([i for i, ok in enumerate(correctness(judged)) if ok], completion_texts(row))
    if len(good) > max_rows:
        good = sorted(rng.sample(good, max(max_rows, 0)))
    return good


def best_of_n(row: dict, judged: dict, *, max_rows: int, rng: random.Random,
              min_score: float | None = None) -> list[int]:
    """The highest-scored completion (one per prompt; ties broken by the seed). With
    ``min_score``, a prompt whose best score is below it gives nothing (a verifier's 0/1 score
    with ``min_score: 1`` keeps only correct best samples)."""
    scores = judged["scores"]
    if max_rows < 1 or not scores:
        return []
    best = _argmax(scores, list(range(len(scores))), rng)
    return [] if min_score is not None and scores[best] < min_score else [best]


def self_loglik(row: dict, judged: dict, *, max_rows: int, rng: random.Random,
                length_normalized: bool = False) -> list[int]:
    """The completion with the highest log-likelihood under the model that sampled it (one per
    prompt; ties, e.g. duplicate samples, broken by the seed). The paper's maximum-likelihood
    self-reward is the sequence-level r_self(y|x) = log pi_base(y|x) (its best-of-N experiments
    rank samples by sequence-level log-probability), the default; ``length_normalized`` ranks
    by log pi_base(y|x) / |y| (tokens scored, end-of-turn included) instead. The judge is not read."""
    comps = row["completions"]
    if max_rows < 1 or not comps:
        return []
    missing = [i for i, c in enumerate(comps) if not isinstance(c.get("logprob"), (int, float))]
    if missing:
        raise RecordError(f"self_loglik: prompt {row['id']!r}: completion(s) {missing} have no 'logprob'; "
                         "score them with the model first (loop.stages.self_score, attach_logprobs)")
    values = [c["logprob"] / max(c.get("logprob_tokens", 1), 1) if length_normalized else c["logprob"]
              for c in comps]
    return [_argmax(values, list(range(len(comps))), rng)]


@dataclass(frozen=True)
class Selection:
    """One registry entry: the function and whether it reads the model's own log-likelihoods."""

    fn: Callable[..., list[int]]
    self_scored: bool
    """True if ``fn`` reads each completion's ``logprob``: the loop then runs the self-score stage."""


SELECTIONS: dict[str, Selection] = {
    "all_correct": Selection(all_correct, self_scored=False),
    "best_of_n": Selection(best_of_n, self_scored=False),
    "self_loglik": Selection(self_loglik, self_scored=True),
}


def check_selection(name: str, params: dict) -> None:
    """Raise ValueError for an unknown selection or a parameter it does not take."""
    if name not in SELECTIONS:
        raise ValueError(f"unknown SFT selection {name!r}; expected one of {sorted(SELECTIONS)}")
    check_params("SFT selection", name, SELECTIONS[name].fn, params, ("max_rows", "rng"))


def attach_logprobs(completions: list[dict], self_scores: list[dict]) -> list[dict]:
    """Copies of the completions rows whose completions carry ``logprob`` and ``logprob_tokens``
    from the self-score rows ``{"id", "logprobs": [float], "num_tokens": [int]}`` (matched by id)."""
    by_id = {s["id"]: s for s in self_scores}
    out = []
    for n, row in enumerate(completions, start=1):
        scored = by_id.get(row["id"])
        if scored is None:
            raise ValueError(f"completions row {n} (id {row['id']!r}) has no self-score row")
        if len(scored["logprobs"]) != len(row["completions"]) or len(scored["num_tokens"]) != len(row["completions"]):
            raise ValueError(f"id {row['id']!r}: {len(row['completions'])} completions but "
                             f"{len(scored['logprobs'])} self-scores")
        comps = [{**c, "logprob": lp, "logprob_tokens": nt}
                 for c, lp, nt in zip(row["completions"], scored["logprobs"], scored["num_tokens"])]
        out.append({**row, "completions": comps})
    return out


def build_sft(completions: list[dict], judgments: list[dict], *, selection: str, max_per_prompt: int,
              seed: int = 0, **params) -> list[dict]:
    """Apply ``selection`` with ``params`` to every prompt (rows matched by ``id``); SFT rows in
    completions order (see the module docstring for the row format)."""
    check_selection(selection, params)
    fn = SELECTIONS[selection].fn
    rng = random.Random(seed)
    rows = []
    for row, judged in matched_rows(completions, judgments):
        correct = correctness(judged)
        for i in fn(row, judged, max_rows=max_per_prompt, rng=rng, **params):
            c = row["completions"][i]
            out = {"id": row["id"], "messages": row["messages"], "completion": c["text"], "label": True,
                   "complete": is_complete(c), "score": judged["scores"][i], "correct": correct[i],
                   "selection": selection}
            out.update({k: c[k] for k in ("logprob", "logprob_tokens") if k in c})
            rows.append(out)
    return rows
