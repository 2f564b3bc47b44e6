"""``run_loop``: rounds of generate -> judge -> pair -> train -> evaluate, resumable, with the gate.

Directory of a run (every file plain, every stage re-runnable alone from the CLI)::

    runs/<name>/config.yaml            the resolved config
    runs/<name>/heldout.jsonl          held-out prompts (same for every round)
    runs/<name>/round_0/eval/          the starting model on the held-out prompts
    runs/<name>/round_<r>/             prompts, completions, judgments, pairs (.jsonl; SFT rows for
                                       objectives on sft data), self_scores.jsonl (self-scored selections),
                                       train/ (model/, train_metrics.jsonl), eval/ (metrics.json),
                                       metrics.json (the round's B-STaR and eval metrics), manifest.json
    runs/<name>/round_<r>/temperature/ with ``generate.temperature_grid``: the probe samples at each
                                       temperature and temperature.json (B-STaR's choice for the round)
    runs/<name>/summary.json           per-round metrics, which rounds were kept, the best model
    runs/<name>/report.html            plots of every metric over rounds, a table of rounds

Resumable: every stage goes through ``manifest.run_stage``, so a killed loop started again skips
finished stages, and a changed recipe that invalidates a finished stage is reported.
The gate: a round's model is kept only if its held-out metric (the judge's: accuracy, mean score or
win rate, ``stages.evaluate``) is not below the best so far minus ``gate_tolerance``; otherwise the
next round starts again from the best model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ratchet.config import RunConfig, save_config, to_dict
from ratchet.data.records import read_jsonl, write_json
from ratchet.data.selection import SELECTIONS
from ratchet.evaluate.bstar import bstar_metrics
from ratchet.loop import stages
from ratchet.console import LoopStatus
from ratchet.loop.manifest import claim, run_stage, stage_seconds, watch
from ratchet.loop.trackers import RoundLog
from ratchet.losses import LOSSES
from ratchet.loop.model_cache import ModelCache
from ratchet.loop import online_round
from ratchet.models import resolve_model


def _evaluate(cfg: RunConfig, task, models: ModelCache, model_path: str, heldout: Path, out_dir: Path,
              round_dir: Path, progress: bool) -> dict:
    """The held-out evaluation of ``model_path``; a win rate is against round 0's answers when the
    task has no reference answers."""
    evaluate, extra = online_round.evaluation(cfg)  # SCoRe: attempt 2 after the self-correction instruction too
    base_answers = cfg.run_dir() / "round_0" / "eval" / "answers.jsonl"
    reference = base_answers if round_dir.name != "round_0" else None
    run_stage(round_dir, "evaluate", {"evaluate": to_dict(cfg.evaluate), "judge": to_dict(cfg.judge),
                                      "model": models.id(model_path), **extra}, [heldout], [out_dir / "metrics.json"],
              lambda: evaluate(*models.get(model_path), heldout, out_dir, cfg.evaluate, cfg.judge, task=task,
                               reference=reference, vllm=cfg.generate.vllm, progress=progress))
    return json.loads((out_dir / "metrics.json").read_text())


def heldout_value(metrics: dict) -> float | None:
    """The number the gate compares: the value of the metric the evaluation declared."""
    return metrics.get(metrics.get("metric", "accuracy"))


def run_round(cfg: RunConfig, task, round_dir: Path, model_path: str, reference_path: str, heldout: Path, r: int,
              models: ModelCache, *, progress: bool = True) -> dict:
    """One round from ``model_path``; returns its metrics (the trained model is in round_dir/train/model)."""
    evaluate = lambda path: _evaluate(cfg, task, models, path, heldout, round_dir / "eval",  # noqa: E731
                                      round_dir, progress)
    if online_round.is_online(cfg):  # on-policy (RLOO, SCoRe): no generate/judge/pair stages, samples drawn in training
        return online_round.run_online_round(cfg, task, round_dir, model_path, reference_path, r, models,
                                             progress=progress, evaluate=evaluate)
    return run_offline_round(cfg, task, round_dir, model_path, reference_path, r, models, progress=progress,
                             evaluate=evaluate)


def run_offline_round(cfg: RunConfig, task, round_dir: Path, model_path: str, reference_path: str, r: int,
                      models: ModelCache, *, progress: bool, evaluate) -> dict:
    """generate -> judge -> pair -> train on the samples of ``model_path``, then ``evaluate`` the trained model."""
    p, c, j, pairs = (round_dir / f for f in ("prompts.jsonl", "completions.jsonl", "judgments.jsonl", "pairs.jsonl"))
    run_stage(round_dir, "prompts", {"task": to_dict(cfg.task), "data": task.fingerprint(), "round": r}, [], [p],
              lambda: stages.make_prompts(task, "train", p, cfg.task.train_prompts, round=r))
    policy = lambda: models.get(model_path)  # noqa: E731  (for a judge that is the policy itself)
    gen, probed = cfg.generate, None
    if gen.temperature_grid:  # B-STaR: this round's temperature from a probe of its first prompts
        probe = round_dir / "temperature"
        run_stage(round_dir, "temperature", {"generate": to_dict(gen), "judge": to_dict(cfg.judge),
                                             "model": models.id(model_path)}, [p], [probe / "temperature.json"],
                  lambda: stages.probe_temperature(*models.get(model_path), p, probe, gen, cfg.judge, task=task,
                                                   progress=progress))
        probed = json.loads((probe / "temperature.json").read_text())
        gen = dataclasses.replace(gen, temperature=probed["temperature"])
    run_stage(round_dir, "generate", {"generate": to_dict(gen), "model": models.id(model_path)}, [p], [c],
              lambda: stages.generate(*models.get(model_path), p, c, gen, task=task, progress=progress))
    judge_key = {"judge": to_dict(cfg.judge)} | ({"model": models.id(model_path)} if _uses_policy(cfg) else {})
    run_stage(round_dir, "judge", judge_key, [c], [j],
              lambda: stages.judge(c, j, cfg.judge, policy=policy, progress=progress))
    scores = None
    if LOSSES[cfg.train.loss.name].data == "sft" and SELECTIONS[cfg.pair.selection].self_scored:
        scores = round_dir / "self_scores.jsonl"  # SFT-sharpening: log pi(y|x) under the sampling model
        run_stage(round_dir, "self_score", {"model": models.id(model_path)}, [c], [scores],
                  lambda: stages.self_score(*models.get(model_path), c, scores, batch_size=gen.batch_size))
    run_stage(round_dir, "pair", {"pair": to_dict(cfg.pair), "loss": cfg.train.loss.name},
              [c, j] + ([scores] if scores else []), [pairs],
              lambda: stages.pair(c, j, pairs, cfg.pair, loss=cfg.train.loss.name, self_scores=scores))
    n_pairs = len(read_jsonl(pairs))
    metrics = {"round": r, **bstar_metrics(read_jsonl(c), _verified(cfg, round_dir, c, j, policy), pairs_kept=n_pairs),
               "temperature": gen.temperature}
    pair_counts = stages.pair_metrics_path(pairs)
    if pair_counts.exists():  # pairs whose chosen text equals the rejected one, left out by the pair stage
        metrics["pairs_dropped_identical"] = json.loads(pair_counts.read_text())["pairs_dropped_identical"]
    if probed is not None:
        metrics["temperature_balance"] = probed["balance_scores"]  # balance score of each grid temperature
    if n_pairs == 0:  # nothing to learn from (DSTC: no self-written test told the samples apart)
        metrics["skipped_training"] = "no pairs"
        write_json(round_dir / "metrics.json", metrics)
        return metrics
    train_dir = round_dir / "train"

    def train_model():
        claim(train_dir, key)  # a training killed under this same recipe resumes from its last checkpoint
        reference = None if reference_path == model_path else models.load(reference_path).model
        stages.train_model(*models.get(model_path), pairs, train_dir, cfg.train, reference_model=reference,
                           reference_id=json.dumps(models.id(reference_path)),
                           revision_template=cfg.revise.template, resume=True, report_to=cfg.log.report_to,
                           progress=progress)
        models.forget()  # the object in memory is now the trained model, not model_path's

    key = {"train": to_dict(cfg.train), "model": models.id(model_path), "reference": models.id(reference_path)}
    if any("revise_" in name for name in LOSSES[cfg.train.loss.name].inputs):  # SRPO trains on revision prompts
        key["revise_template"] = cfg.revise.template
    run_stage(round_dir, "train", key, [pairs], [train_dir / "model"], train_model)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    metrics["train_loss"] = summary["final"].get("loss")
    metrics.update(evaluate(str(train_dir / "model")))
    write_json(round_dir / "metrics.json", metrics)
    return metrics


def _verified(cfg: RunConfig, round_dir: Path, completions: Path, judgments: Path, policy) -> list[dict]:
    """The judgments for B-STaR's metrics. A judge that only scores (a self-rewarding LLM judge, a
    reward model) says nothing of correctness; when ``evaluate.judge`` is a verifier, the samples are
    also verified (``verified.jsonl``) so ``pass_at_*`` are real and ``best_of_k`` tells how often the
    training judge's own pick is correct."""
    judged = read_jsonl(judgments)
    if cfg.evaluate.judge is None or any(x is not None for row in judged for x in row["correct"]):
        return judged
    verified = round_dir / "verified.jsonl"
    check = stages.eval_judge(cfg.evaluate, cfg.judge)
    run_stage(round_dir, "verify", {"judge": to_dict(check)}, [completions], [verified],
              lambda: stages.judge(completions, verified, check, policy=policy))
    truth = {row["id"]: row["correct"] for row in read_jsonl(verified)}
    return [{**row, "correct": truth[row["id"]]} for row in judged]


def _uses_policy(cfg: RunConfig) -> bool:
    """Whether the judge is the model being trained (its verdicts then depend on the round's model)."""
    return cfg.judge.params.get("model", "policy") == "policy" and cfg.judge.name == "llm"


def _keep(m: dict, best: float, tolerance: float) -> bool:
    value = heldout_value(m)
    return value is not None and value >= best - tolerance


def run_loop(cfg: RunConfig, *, progress: bool = True) -> dict:
    status = LoopStatus(cfg.rounds, enabled=progress)
    with watch(status.stage):
        return _run_loop(cfg, status, progress=progress)


def _run_loop(cfg: RunConfig, status: LoopStatus, *, progress: bool) -> dict:
    start = time.time()
    task = stages.make_task(cfg.task)
    task.check()  # a missing file or column fails here, before any model loads
    initial = best_path = resolve_model(cfg.model.path, revision=cfg.model.revision)  # a missing model too,
    # before the run directory is written
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    heldout = run_dir / "heldout.jsonl"
    run_stage(run_dir / "round_0", "heldout", {"task": to_dict(cfg.task), "data": task.fingerprint()}, [], [heldout],
              lambda: stages.make_prompts(task, "heldout", heldout, cfg.task.heldout_prompts))
    models = ModelCache(cfg.model.load_options())
    base = _evaluate(cfg, task, models, initial, heldout, run_dir / "round_0" / "eval", run_dir / "round_0", progress)
    metric = base.get("metric", "accuracy")
    rounds = [{"round": 0, **base, "kept": True}]
    trackers = RoundLog(cfg.log.report_to, run_dir, cfg.name, to_dict(cfg))
    trackers.log(rounds[0], step=0)
    best = heldout_value(base)
    status.set_metric(metric, best)
    for r in range(1, cfg.rounds + 1):
        status.begin_round(r)
        reference = initial if cfg.train.reference == "initial" else best_path
        m = run_round(cfg, task, run_dir / f"round_{r}", best_path, reference, heldout, r, models, progress=progress)
        status.set_metric(metric, heldout_value(m))
        kept = _keep(m, best, cfg.gate_tolerance)
        if kept:
            best, best_path = max(best, heldout_value(m)), str(run_dir / f"round_{r}" / "train" / "model")
        elif "skipped_training" in m:
            m["rollback"] = f"not trained ({m['skipped_training']}); next round starts from {best_path}"
        else:
            m["rollback"] = (f"held-out {metric} {heldout_value(m)} below best {best:.3f} - tolerance "
                             f"{cfg.gate_tolerance}; next round starts from {best_path}")
        rounds.append({**m, "kept": kept})
        trackers.log({**m, "kept": float(kept), "seconds": stage_seconds(run_dir / f"round_{r}")}, step=r)
        write_json(run_dir / "summary.json", {"rounds": rounds, "best_model": best_path, "metric": metric})
    trackers.finish()
    summary = {"rounds": rounds, "best_model": best_path, "metric": metric, "metric_start": heldout_value(base),
               "metric_best": best, "n_heldout": base["n"], "minutes": (time.time() - start) / 60}
    if metric == "accuracy":  # the names the demo line and earlier summaries use
        summary.update(accuracy_start=base["accuracy"], accuracy_best=best)
    write_json(run_dir / "summary.json", summary)
    from ratchet.loop.report import write_report

    write_report(run_dir, summary)
    return summary
