"""Rollouts for on-policy training: sample with the policy, score the samples; SCoRe's episodes.

Builds the ``rollout(rows, seed) -> train.online.Rollout`` function that ``train.online`` calls
every step. The sampler holds the very model being trained, so each call samples the current
policy. A reward maps (prompt row, its samples as ``PromptCompletion``) to ``Judgment``s:

- ``judge_reward``: any ``Judge``'s score (the ``answer`` judge: 1.0 for a correct final answer);
- ``self_loglik_reward``: Sharpening's self-reward (Huang et al. 2024, arXiv 2412.01951; section
  9.6) log pi_base(y|x) under a fixed model (the round's reference), per token if
  ``length_normalized``; no ground truth is read.
- ``win_rate_reward``: SPO's self-play reward (Swamy et al. 2024, arXiv 2401.04056, Algorithm 1):
  each sample's win rate against the prompt's other samples under the judge (``others_win_rates``).

Episodes: ``single_turn`` (k completions of each prompt: RLOO) and ``two_turn`` (SCoRe, Kumar et
al. 2024: k first attempts, then one second attempt after each, prompted by
``data.correction.correction_messages``). Each rollout row for rollouts.jsonl holds the samples in
the completions-file form and the scores in the judgments-file form, so it reads like a round's
completions.jsonl + judgments.jsonl.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ratchet.data.correction import correction_messages
from ratchet.data.pairing import is_complete, win_rates
from ratchet.data.revision import PromptCompletion
from ratchet.generate.base import Sample, Sampler, SamplingParams
from ratchet.judge.base import Judge, Judgment
from ratchet.train.online import Rollout

Reward = Callable[[dict, list[PromptCompletion]], list[Judgment]]


def judge_reward(judge: Judge) -> Reward:
    return lambda row, seqs: judge.judge(row, [s.text for s in seqs])


def others_win_rates(judged: dict) -> list[float]:
    """SPO's reward of each of a prompt's K samples: its win rate against the OTHER K - 1 samples,
    r_i = (1/(K-1)) sum_{j != i} P(y_i > y_j) (Swamy et al. 2024, arXiv 2401.04056, Algorithm 1:
    the preference of a trajectory over the others in its batch), from a judgments row:

    - a pairwise judge (``details[i]`` with ``wins`` and ``comparisons``, both orders): wins_i / comparisons_i
      (1/2 with no comparison);
    - otherwise ``data.pairing.win_rates``, SPPO's P_i = (1/K)(sum_{j != i} P_ij + 1/2), which counts
      the self-comparison as 1/2; without it, r_i = (K P_i - 1/2) / (K - 1). So a verifier's correct
      sample among c correct of K gets (K - c + (c - 1)/2) / (K - 1), a wrong one (K - c - 1)/2 / (K - 1)."""
    details = judged.get("details") or []
    if details and all(isinstance(d, dict) and {"wins", "comparisons"} <= set(d) for d in details):
        return [d["wins"] / d["comparisons"] if d["comparisons"] else 0.5 for d in details]
    rates = win_rates(judged)
    k = len(rates)
    if k < 2:
        raise ValueError(f"win-rate reward: a prompt needs at least 2 samples to compare, got {k} (generate.k)")
    return [(k * p - 0.5) / (k - 1) for p in rates]


def win_rate_reward(judge: Judge) -> Reward:
    """SPO: the judge's verdicts on a prompt's samples turned into each one's win rate against the
    others (``others_win_rates``); the judge's own score is kept in ``detail["judge_score"]``."""
    def reward(row: dict, seqs: list[PromptCompletion]) -> list[Judgment]:
        verdicts = judge.judge(row, [s.text for s in seqs])
        rates = others_win_rates({"scores": [v.score for v in verdicts], "correct": [v.correct for v in verdicts],
                                  "details": [v.detail for v in verdicts]})
        return [Judgment(score=rate, correct=v.correct, detail={**(v.detail or {}), "judge_score": v.score})
                for rate, v in zip(rates, verdicts)]
    return reward


def self_loglik_reward(model, tokenizer, *, length_normalized: bool = True, batch_size: int = 32) -> Reward:
    """r(y|x) = log pi(y|x) under ``model`` (kept fixed by the caller), divided by the token count
    of y if ``length_normalized``; ``correct`` stays unknown (None)."""
    from ratchet.generate.score import sequence_logprobs  # teacher-forced scoring of given samples

    def reward(row: dict, seqs: list[PromptCompletion]) -> list[Judgment]:
        scored = sequence_logprobs(model, tokenizer, [tuple(s) for s in seqs], batch_size=batch_size)
        return [Judgment(score=lp / max(n, 1) if length_normalized else lp, correct=None,
                         detail={"logprob": lp, "tokens": n}) for lp, n in scored]
    return reward


def _complete(sample: Sample) -> bool:
    return is_complete({"finish_reason": sample.finish_reason})


def _record(samples: list[Sample], verdicts: list[Judgment], prefix: str = "") -> dict:
    return {f"{prefix}completions": [{"text": s.text, "finish_reason": s.finish_reason} for s in samples],
            f"{prefix}scores": [v.score for v in verdicts], f"{prefix}correct": [v.correct for v in verdicts],
            f"{prefix}details": [v.detail for v in verdicts]}


def _identity(row: dict) -> dict:
    return {k: row[k] for k in ("id", "answer") if k in row}


def single_turn(sampler: Sampler, params: SamplingParams, reward: Reward) -> Callable[[list[dict], int], Rollout]:
    """k = ``params.k`` completions of each prompt, rewarded: sequence ``completion``, value ``rewards``."""
    def rollout(rows: list[dict], seed: int) -> Rollout:
        samples = sampler.sample([r["messages"] for r in rows], dataclasses.replace(params, seed=seed))
        seqs = [[PromptCompletion(r["messages"], s.text, _complete(s)) for s in ss] for r, ss in zip(rows, samples)]
        verdicts = [reward(r, q) for r, q in zip(rows, seqs)]
        return Rollout({"completion": seqs}, {"rewards": [[v.score for v in vs] for vs in verdicts]},
                       [{**_identity(r), **_record(ss, vs)} for r, ss, vs in zip(rows, samples, verdicts)])
    return rollout


def two_turn(sampler: Sampler, params: SamplingParams, reward: Reward,
             instruction: str) -> Callable[[list[dict], int], Rollout]:
    """SCoRe episodes: k first attempts y1 ~ pi(.|x), then for each one y2 ~ pi(.|[x, y1, instruction]).
    Sequences ``first`` and ``second``; values ``first_rewards`` and ``second_rewards``."""
    def rollout(rows: list[dict], seed: int) -> Rollout:
        first = sampler.sample([r["messages"] for r in rows], dataclasses.replace(params, seed=seed))
        contexts = [correction_messages(r["messages"], s.text, instruction) for r, ss in zip(rows, first) for s in ss]
        flat = sampler.sample(contexts, dataclasses.replace(params, k=1, seed=seed + 1))
        k = params.k
        second = [[flat[b * k + i][0] for i in range(k)] for b in range(len(rows))]
        seqs1 = [[PromptCompletion(r["messages"], s.text, _complete(s)) for s in ss] for r, ss in zip(rows, first)]
        seqs2 = [[PromptCompletion(contexts[b * k + i], s.text, _complete(s)) for i, s in enumerate(ss)]
                 for b, ss in enumerate(second)]
        v1 = [reward(r, q) for r, q in zip(rows, seqs1)]
        v2 = [reward(r, q) for r, q in zip(rows, seqs2)]
        records = [{**_identity(r), **_record(s1, a), **_record(s2, b, "second_")}
                   for r, s1, s2, a, b in zip(rows, first, second, v1, v2)]
        return Rollout({"first": seqs1, "second": seqs2},
                       {"first_rewards": [[v.score for v in vs] for vs in v1],
                        "second_rewards": [[v.score for v in vs] for vs in v2]}, records)
    return rollout
