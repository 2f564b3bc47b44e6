"""The ratchet gate: whether a round's model is kept, from its held-out answers against the best round's.

This module owns the gate's decision (``decide``) and reading the per-problem outcomes it compares
(``heldout_outcomes``); the statistics are ``evaluate.metrics``' and the loop (``loop.run``) keeps
track of the best round. Both rounds answered the same held-out problems, so the comparison is
paired, problem by problem (the id of each row):

    accuracy     outcome 1 if ``correct[0]`` is True, else 0 (no verdict counts as wrong, as in the
                 metric); exact McNemar test on the problems only one of the two rounds solved
    mean_score   outcome ``scores[0]``; paired bootstrap of the mean difference
    win_rate     outcome ``outcome`` (1 win, 0.5 tie, 0 loss against the same reference answers);
                 paired bootstrap

The outcomes are in ``round_<r>/eval/judgments.jsonl``, or in the evaluation the round's metrics
name under ``gated`` (``gated_eval_dir``): ``eval/revision_<k>/`` for the revision ``evaluate.gate_on``
picks, ``eval_goal/`` for reward-augmented pairs (``loop.run.gated_choice``); both rounds of a
comparison are read the same way, so the pairs stay problem by problem. Rules (``gate.rule``):

    no_regression      kept if metric >= best - ``gate.tolerance`` (the p-value is recorded, not used)
    significant_gain   kept if metric - best >= ``gate.min_delta`` and the one-sided p-value of
                       "this round is better" is <= 1 - ``gate.confidence``

The paired bootstrap resamples with a fixed seed (0), so a decision is a function of the answers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ratchet.config import GateConfig
from ratchet.data.records import read_jsonl
from ratchet.evaluate.metrics import paired_comparison

TESTS = {"accuracy": "mcnemar_exact", "mean_score": "paired_bootstrap", "win_rate": "paired_bootstrap"}
"""The paired test of each held-out metric."""


def heldout_outcomes(eval_dir: Path, metric: str) -> dict[str, float] | None:
    """Problem id -> outcome of one held-out evaluation (see the module docstring), or None where
    its ``judgments.jsonl`` is missing or the metric has no per-problem outcome."""
    path = Path(eval_dir) / "judgments.jsonl"
    if metric not in TESTS or not path.is_file():
        return None
    rows = read_jsonl(path)
    if metric == "win_rate":
        return {row["id"]: float(row["outcome"]) for row in rows}
    if metric == "accuracy":
        return {row["id"]: 1.0 if row["correct"][0] is True else 0.0 for row in rows}
    return {row["id"]: float(row["scores"][0]) for row in rows}


def gated_eval_dir(round_dir: Path, metrics: dict) -> Path:
    """The evaluation directory whose judgments the gate compares: ``round_dir/eval``, or the one
    ``metrics["gated"]`` names (``{"eval": directory name, "revision": k}``; revision 0 is the
    directory itself, revision k its ``revision_<k>/``)."""
    gated = metrics.get("gated")
    if gated is None:
        return Path(round_dir) / "eval"
    eval_dir = Path(round_dir) / gated["eval"]
    return eval_dir / f"revision_{gated['revision']}" if gated["revision"] else eval_dir


@dataclass(frozen=True)
class Best:
    """The round the gate compares with: the best held-out value so far, and its outcomes."""

    round: int
    value: float
    outcomes: dict[str, float] | None


def _paired(metric: str, outcomes: dict | None, best: Best) -> dict:
    """Delta, p-value and test of the round against ``best`` on the problems both answered."""
    if outcomes is None or best.outcomes is None:
        return {"test": None, "p_value": None, "n_paired": 0}
    shared = [pid for pid in best.outcomes if pid in outcomes]
    if not shared:
        return {"test": None, "p_value": None, "n_paired": 0}
    result = paired_comparison([outcomes[p] for p in shared], [best.outcomes[p] for p in shared],
                               test=TESTS[metric])
    out = {"test": result.test, "p_value": result.p_value, "n_paired": result.n}
    if result.discordant is not None:
        out["discordant"] = list(result.discordant)  # (only this round right, only the best round right)
    return out


def decide(cfg: GateConfig, metric: str, value: float | None, outcomes: dict | None, best: Best) -> dict:
    """The gate's record for one round: ``{"rule", "compared_with", "delta", "p_value", "test",
    "n_paired", "decision", "reason"}``, ``decision`` ``kept`` or ``rolled back``."""
    record = {"rule": cfg.rule, "compared_with": best.round, "delta": None, "p_value": None, "test": None}
    if value is None:
        return {**record, "decision": "rolled back", "reason": f"no held-out {metric}"}
    record.update(delta=value - best.value, **_paired(metric, outcomes, best))
    if cfg.rule == "no_regression":
        kept = value >= best.value - cfg.tolerance
        reason = (f"held-out {metric} {value:.3f} {'>=' if kept else '<'} best {best.value:.3f} (round {best.round})"
                  f" - tolerance {cfg.tolerance}")
        return {**record, "decision": "kept" if kept else "rolled back", "reason": reason}
    alpha, p = 1 - cfg.confidence, record["p_value"]
    if p is None:
        return {**record, "decision": "rolled back",
                "reason": f"no per-problem outcomes to test the gain in {metric} against round {best.round}"}
    kept = record["delta"] >= cfg.min_delta and p <= alpha
    reason = (f"held-out {metric} {value:.3f} vs best {best.value:.3f} (round {best.round}): gain "
              f"{record['delta']:+.3f}, one-sided p = {p:.4g} ({record['test']}, {record['n_paired']} problems); "
              f"kept needs gain >= {cfg.min_delta} and p <= {alpha:.3g}")
    return {**record, "decision": "kept" if kept else "rolled back", "reason": reason}
