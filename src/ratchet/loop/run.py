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
    runs/<name>/round_<r>/eval/revision_<k>/  with ``revise.revisions``: revision k of the held-out answers
                                       (answers, judgments, metrics.json); eval/revisions.json the values
    runs/<name>/round_<r>/eval_goal/   reward-augmented pairs: the held-out prompts asked with the goal
                                       (``heldout_goal.jsonl``), which the gate reads
    runs/<name>/round_<r>/revisions.jsonl, revision_judgments.jsonl, pairs_with_revisions.jsonl
                                       with ``revise.train_drafts``: the samples revised by the model,
                                       and the pairs the train stage reads (``_revision_pairs``)
    runs/<name>/summary.json           per-round metrics with their 95% interval and the gate's record,
                                       which rounds were kept, the best model, the seed and thread count
    runs/<name>/timing.json            wall-clock minutes of the run (kept out of summary.json)
    runs/<name>/report.html            plots of every metric over rounds, a table of rounds

Resumable: every stage goes through ``manifest.run_stage``, so a killed loop started again skips
finished stages, and a changed recipe that invalidates a finished stage is reported.
The gate (``loop.gate``, ``gate`` in the recipe): a round's model is kept or rolled back from its
held-out metric (the judge's: accuracy, mean score or win rate, ``stages.evaluate``) against the
best round so far, compared problem by problem; a rolled-back round's successor starts again from
the best model.

Exact repeats: the same recipe and seed on the same machine with the same torch thread count
writes the same bytes in every file but those ``REPEAT_EXCLUDED`` names (timings, and bookkeeping
that names a model by its files' mtimes); ``repeat_hashes`` is the comparison.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import time
from pathlib import Path

from ratchet.config import RunConfig, save_config, to_dict
from ratchet.data.records import read_jsonl, write_json, write_jsonl
from ratchet.data.selection import SELECTIONS
from ratchet.evaluate.bstar import bstar_metrics
from ratchet.evaluate.metrics import metric_interval
from ratchet.loop import stages
from ratchet.loop.gate import Best, decide, gated_eval_dir, heldout_outcomes
from ratchet.console import LoopStatus
from ratchet.loop.manifest import claim, run_stage, stage_seconds, watch
from ratchet.loop.trackers import RoundLog
from ratchet.losses import LOSSES
from ratchet.loop.model_cache import ModelCache
from ratchet.loop.executor import current_executor, stage_model, using
from ratchet.loop import online_round
from ratchet.models import resolve_model


def _evaluate(cfg: RunConfig, task, models: ModelCache, model_path: str, heldout: Path, out_dir: Path,
              round_dir: Path, progress: bool) -> dict:
    """The held-out evaluation of ``model_path`` in ``out_dir``: the greedy answers and, with
    ``revise.revisions`` N, their N self-revisions (``revision_0`` .. ``revision_N``); for
    reward-augmented pairs the same again with the goal prompt the model was trained with, in
    ``<out_dir>_goal`` (nested under ``goal``). ``gated`` names the number the gate compares
    (``gated_choice``); without revisions or a goal there is none and the gate reads the draft."""
    metrics = _evaluate_prompts(cfg, task, models, model_path, heldout, out_dir, round_dir, "evaluate", progress)
    goal_prompts = _goal_prompts(cfg, heldout)
    if goal_prompts is not None:
        goal_dir = out_dir.with_name(f"{out_dir.name}_goal")
        metrics["goal"] = _evaluate_prompts(cfg, task, models, model_path, goal_prompts, goal_dir, round_dir,
                                            "evaluate_goal", progress)
    gated = gated_choice(cfg, metrics, out_dir.name)
    if gated is not None:
        chosen = gated_eval_dir(round_dir, {"gated": gated}) / "metrics.json"
        interval = json.loads(chosen.read_text()).get("interval")
        metrics["gated"] = {**gated, "interval": interval}
    return metrics


def _evaluate_prompts(cfg: RunConfig, task, models: ModelCache, model_path: str, prompts: Path, out_dir: Path,
                      round_dir: Path, stage: str, progress: bool) -> dict:
    """One held-out evaluation (stage ``stage``) and, with ``revise.revisions``, its revisions
    (``<stage>_revisions``); a win rate is against round 0's answers to the same prompts when the
    task has no reference answers."""
    evaluate, extra = online_round.evaluation(cfg)  # SCoRe: attempt 2 after the self-correction instruction too
    base_answers = cfg.run_dir() / "round_0" / out_dir.name / "answers.jsonl"
    reference = base_answers if round_dir.name != "round_0" else None
    eval_key = {k: v for k, v in to_dict(cfg.evaluate).items() if k != "gate_on"}  # the gate's choice, not the answers'
    run_stage(round_dir, stage, {"evaluate": eval_key, "judge": to_dict(cfg.judge), "model": models.id(model_path),
                                 **extra}, [prompts], [out_dir / "metrics.json"],
              lambda: evaluate(*stage_model(models, model_path), prompts, out_dir, cfg.evaluate, cfg.judge,
                               task=task, reference=reference, vllm=cfg.generate.vllm, progress=progress))
    metrics = json.loads((out_dir / "metrics.json").read_text())
    if cfg.revise.revisions:  # SRPO's inference: the answers revised N times, each step judged
        revise_key = {"revisions": cfg.revise.revisions, "template": cfg.revise.template}
        run_stage(round_dir, f"{stage}_revisions", {"revise": revise_key, "evaluate": eval_key,
                                                    "judge": to_dict(cfg.judge), "model": models.id(model_path)},
                  [out_dir / "answers.jsonl"], [out_dir / "revisions.json"],
                  lambda: stages.revise_answers(*stage_model(models, model_path), out_dir, cfg.revise, cfg.evaluate,
                                                cfg.judge, task=task, vllm=cfg.generate.vllm, progress=progress))
        revisions = json.loads((out_dir / "revisions.json").read_text())
        metrics.update({k: v for k, v in revisions.items() if k.startswith("revision_") and k != "revision_intervals"})
    return metrics


def _goal_prompts(cfg: RunConfig, heldout: Path) -> Path | None:
    """Reward-augmented pairs (RA, arXiv 2410.08067): the held-out prompts with the goal the model
    is asked for at inference, the highest score (``pairing.inference_goal``), placed and worded
    as in training; None for any other pair strategy, or an objective that reads no pairs."""
    if cfg.pair.strategy != "reward_augmented" or LOSSES[cfg.train.loss.name].data not in ("paired", "revision",
                                                                                           "scored"):
        return None
    from ratchet.data.pairing import goal_messages, inference_goal

    params = cfg.pair.params
    placing = {k: params[k] for k in ("template", "goal_in") if k in params}
    score = inference_goal(**{k: params[k] for k in ("template", "top_score") if k in params})
    out = cfg.run_dir() / "heldout_goal.jsonl"
    run_stage(cfg.run_dir() / "round_0", "heldout_goal", {"score": score, **placing}, [heldout], [out],
              lambda: write_jsonl(out, ({**r, "messages": goal_messages(r["messages"], score, **placing)}
                                        for r in read_jsonl(heldout))))
    return out


def gated_choice(cfg: RunConfig, metrics: dict, eval_name: str = "eval") -> dict | None:
    """``{"eval", "revision", "value"}``: the evaluation the gate compares (the goal-conditioned one
    when there is one, as the model is meant to be asked) and its revision ``evaluate.gate_on``
    picks (the first best on a tie); None where there is only the plain draft."""
    if "goal" not in metrics and not cfg.revise.revisions:
        return None
    name, m = (f"{eval_name}_goal", metrics["goal"]) if "goal" in metrics else (eval_name, metrics)
    values = [m[f"revision_{k}"] for k in range(cfg.revise.revisions + 1)] if cfg.revise.revisions else [m[m["metric"]]]
    k = {"draft": 0, "last_revision": len(values) - 1,
         "best_revision": max(range(len(values)), key=values.__getitem__)}[cfg.evaluate.gate_on]
    return {"eval": name, "revision": k, "value": values[k]}


def heldout_value(metrics: dict) -> float | None:
    """The number the gate compares: the ``gated`` one (a revision, the goal-conditioned evaluation)
    where the evaluation names one, else the value of the metric the evaluation declared."""
    if "gated" in metrics:
        return metrics["gated"]["value"]
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
    policy = lambda: stage_model(models, model_path)  # noqa: E731  (for a judge that is the policy itself)
    gen, probed = cfg.generate, None
    if gen.temperature_grid:  # B-STaR: this round's temperature from a probe of its first prompts
        probe = round_dir / "temperature"
        run_stage(round_dir, "temperature", {"generate": to_dict(gen), "judge": to_dict(cfg.judge),
                                             "model": models.id(model_path)}, [p], [probe / "temperature.json"],
                  lambda: stages.probe_temperature(*stage_model(models, model_path), p, probe, gen, cfg.judge,
                                                   task=task, progress=progress))
        probed = json.loads((probe / "temperature.json").read_text())
        gen = dataclasses.replace(gen, temperature=probed["temperature"])
    run_stage(round_dir, "generate", {"generate": to_dict(gen), "model": models.id(model_path)}, [p], [c],
              lambda: stages.generate(*stage_model(models, model_path), p, c, gen, task=task, progress=progress))
    judge_key = {"judge": to_dict(cfg.judge)} | ({"model": models.id(model_path)} if _uses_policy(cfg) else {})
    run_stage(round_dir, "judge", judge_key, [c], [j],
              lambda: stages.judge(c, j, cfg.judge, policy=policy, progress=progress))
    scores = None
    if LOSSES[cfg.train.loss.name].data == "sft" and SELECTIONS[cfg.pair.selection].self_scored:
        scores = round_dir / "self_scores.jsonl"  # SFT-sharpening: log pi(y|x) under the sampling model
        run_stage(round_dir, "self_score", {"model": models.id(model_path)}, [c], [scores],
                  lambda: stages.self_score(*stage_model(models, model_path), c, scores,
                                            batch_size=gen.batch_size))
    run_stage(round_dir, "pair", {"pair": to_dict(cfg.pair), "loss": cfg.train.loss.name},
              [c, j] + ([scores] if scores else []), [pairs],
              lambda: stages.pair(c, j, pairs, cfg.pair, loss=cfg.train.loss.name, self_scores=scores))
    if cfg.revise.train_drafts:  # SRPO: the model's own revisions of its drafts join the pairs
        pairs = _revision_pairs(cfg, task, round_dir, model_path, models, gen, pairs, policy, progress)
    n_pairs = len(read_jsonl(pairs))
    truth, verified = _verified(cfg, round_dir, c, j, policy)
    metrics = {"round": r, **bstar_metrics(read_jsonl(c), truth, pairs_kept=n_pairs), "temperature": gen.temperature}
    if not verified:  # the training judge gave the verdicts itself: no second opinion to agree with
        metrics = {k: v for k, v in metrics.items() if k not in ("judge_agreement", "judge_pick_vs_random")}
    pair_counts = stages.pair_metrics_path(pairs)
    if pair_counts.exists():  # pairs whose chosen text equals the rejected one, left out by the pair stage
        counts = json.loads(pair_counts.read_text())
        metrics.update({k: counts[k] for k in ("pairs_dropped_identical", "revision_pairs") if k in counts})
    if probed is not None:
        metrics["temperature_balance"] = probed["balance_scores"]  # balance score of each grid temperature
    if n_pairs == 0:  # nothing to learn from (DSTC: no self-written test told the samples apart)
        metrics["skipped_training"] = "no pairs"
        write_json(round_dir / "metrics.json", metrics)
        return metrics
    train_dir = round_dir / "train"

    anchor_path = _anchor_path(cfg)

    def train_model():
        claim(train_dir, key)  # a training killed under this same recipe resumes from its last checkpoint
        options = dict(reference_id=json.dumps(models.id(reference_path)),
                       anchor_id=json.dumps(models.id(anchor_path or model_path)),
                       revision_template=cfg.revise.template, resume=True, report_to=cfg.log.report_to,
                       progress=progress)
        reference = None if reference_path == model_path else reference_path
        anchor = None if anchor_path in (None, model_path) else anchor_path
        if current_executor().train(model_path, reference, anchor, pairs, train_dir, cfg.train, **options):
            return  # executor.train_workers: trained by Ray Train's workers (DDP through accelerate)
        reference, anchor = (path and models.load(path).model for path in (reference, anchor))
        stages.train_model(*models.get(model_path), pairs, train_dir, cfg.train, reference_model=reference,
                           anchor_model=anchor, **options)
        models.forget()  # the object in memory is now the trained model, not model_path's

    key = {"train": to_dict(cfg.train), "model": models.id(model_path), "reference": models.id(reference_path)}
    if anchor_path is not None:
        key["anchor"] = models.id(anchor_path)
    if LOSSES[cfg.train.loss.name].data == "revision":  # SRPO and PIT train on revision prompts
        key["revise_template"] = cfg.revise.template
    run_stage(round_dir, "train", key, [pairs], [train_dir / "model"], train_model)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    metrics["train_loss"] = summary["final"].get("loss")
    metrics.update(evaluate(str(train_dir / "model")))
    write_json(round_dir / "metrics.json", metrics)
    return metrics


def _revision_pairs(cfg: RunConfig, task, round_dir: Path, model_path: str, models: ModelCache, gen, pairs: Path,
                    policy, progress: bool) -> Path:
    """``revise.train_drafts``: the round's samples revised once by the model that drew them
    (``revisions.jsonl``), the revisions judged (``revision_judgments.jsonl``), and (draft, revision)
    pairs, the better one chosen, added to the round's pairs in ``pairs_with_revisions.jsonl``, which
    the train stage reads."""
    c, j = round_dir / "completions.jsonl", round_dir / "judgments.jsonl"
    revised, judged, out = (round_dir / f for f in ("revisions.jsonl", "revision_judgments.jsonl",
                                                    "pairs_with_revisions.jsonl"))
    run_stage(round_dir, "revise_samples", {"train_drafts": cfg.revise.train_drafts, "template": cfg.revise.template,
                                            "generate": to_dict(gen), "model": models.id(model_path)}, [c], [revised],
              lambda: stages.revise_samples(*stage_model(models, model_path), c, revised, cfg.revise, gen, task=task,
                                            progress=progress))
    judge_key = {"judge": to_dict(cfg.judge)} | ({"model": models.id(model_path)} if _uses_policy(cfg) else {})
    run_stage(round_dir, "judge_revisions", judge_key, [revised], [judged],
              lambda: stages.judge(revised, judged, cfg.judge, policy=policy, progress=progress))
    run_stage(round_dir, "revision_pairs", {"drop_truncated": cfg.pair.drop_truncated}, [pairs, c, j, revised, judged],
              [out], lambda: stages.revision_pairs(pairs, c, j, revised, judged, out,
                                                   drop_truncated=cfg.pair.drop_truncated))
    return out


def _anchor_path(cfg: RunConfig) -> str | None:
    """The anchor model of an objective that reads one (INPO), else None.

    INPO (Zhang et al. 2024, arXiv 2407.00617, section 4, the per-round loss L_t): h_t compares the
    policy with the fixed reference pi_ref (weight tau/eta) and with the previous iterate pi_t (weight
    1 - tau/eta). pi_ref is the loss's anchor (anchor_*): the run's starting model, in every round.
    pi_t is its reference (ref_*): the model the round starts from, which the default
    ``train.reference: previous`` gives. In round 1 both are the starting model."""
    if not LOSSES[cfg.train.loss.name].reads.anchor:
        return None
    return resolve_model(cfg.model.path, revision=cfg.model.revision)


def _verified(cfg: RunConfig, round_dir: Path, completions: Path, judgments: Path,
              policy) -> tuple[list[dict], bool]:
    """(the judgments for B-STaR's metrics, whether a separate verifier gave their ``correct``). A
    judge that only scores (a self-rewarding LLM judge, a reward model) says nothing of correctness;
    when ``evaluate.judge`` is a verifier, the samples are also verified (``verified.jsonl``) so
    ``pass_at_*`` are real and ``judge_agreement`` (= ``best_of_k``) tells how often the training
    judge's own pick is correct, ``judge_pick_vs_random`` how much better than a random sample."""
    judged = read_jsonl(judgments)
    if cfg.evaluate.judge is None or any(x is not None for row in judged for x in row["correct"]):
        return judged, False
    verified = round_dir / "verified.jsonl"
    check = stages.eval_judge(cfg.evaluate, cfg.judge)
    run_stage(round_dir, "verify", {"judge": to_dict(check)}, [completions], [verified],
              lambda: stages.judge(completions, verified, check, policy=policy))
    truth = {row["id"]: row["correct"] for row in read_jsonl(verified)}
    return [{**row, "correct": truth[row["id"]]} for row in judged], True


def _uses_policy(cfg: RunConfig) -> bool:
    """Whether the judge is the model being trained (its verdicts then depend on the round's model)."""
    return cfg.judge.params.get("model", "policy") == "policy" and cfg.judge.name == "llm"


REPEAT_EXCLUDED = {
    "timing.json": "the run's wall-clock minutes",
    "round_*/manifest.json": "each stage's seconds; stage keys name a model by its files' sizes and mtimes",
    "round_*/train/stage_config.json": "the train stage's key (names models by mtime, as the manifest)",
    "round_*/train/train_metrics.jsonl": "per-step throughput (pairs_per_s, tokens_per_s)",
    "round_*/train/train_summary.json": "training seconds and the last step's throughput",
    "round_*/*.ref-*.safetensors": "reference log-prob cache, its name a hash of the reference model's mtimes",
    "round_*/*.anchor-*.safetensors": "anchor log-prob cache, named as the reference one",
    "*events.out.tfevents*": "experiment-tracker event files (wall-clock timestamps)",
}
"""Files of a run directory (``fnmatch`` patterns on the path relative to it) that hold timings, or
a model's identity by mtime, and so differ between two exact repeats; every other file of a repeat
is byte-identical (docs/loop.md, "Exact repeats")."""


def repeat_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run directory but the ``REPEAT_EXCLUDED`` ones, by relative path:
    two runs of the same recipe and seed on one machine with one thread count give equal dicts."""
    run_dir = Path(run_dir)
    out = {}
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(run_dir).as_posix()
        if not any(fnmatch.fnmatch(rel, pattern) for pattern in REPEAT_EXCLUDED):
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def run_loop(cfg: RunConfig, *, progress: bool = True) -> dict:
    status = LoopStatus(cfg.rounds, enabled=progress)
    # executor ray: the cluster is reached here, before any model loads (docs/scaling.md)
    with watch(status.stage), using(cfg.executor, cfg.model.load_options()):
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
    rounds = [{"round": 0, **base, "interval": _interval(base), "kept": True}]
    trackers = RoundLog(cfg.log.report_to, run_dir, cfg.name, to_dict(cfg))
    trackers.log(rounds[0], step=0)
    best = Best(0, heldout_value(base), heldout_outcomes(gated_eval_dir(run_dir / "round_0", base), metric))
    status.set_metric(metric, best.value)
    for r in range(1, cfg.rounds + 1):
        status.begin_round(r)
        reference = initial if cfg.train.reference == "initial" else best_path
        m = run_round(cfg, task, run_dir / f"round_{r}", best_path, reference, heldout, r, models, progress=progress)
        status.set_metric(metric, heldout_value(m))
        m, best, best_path = _gate(cfg, run_dir / f"round_{r}", m, metric, best, best_path)
        rounds.append(m)
        trackers.log({**m, "kept": float(m["kept"]), "seconds": stage_seconds(run_dir / f"round_{r}")}, step=r)
        write_json(run_dir / "summary.json", {"rounds": rounds, "best_model": best_path, "metric": metric})
    trackers.finish()
    summary = _summary(cfg, rounds, best_path, metric, base, best)
    write_json(run_dir / "summary.json", summary)
    minutes = (time.time() - start) / 60
    write_json(run_dir / "timing.json", {"minutes": minutes})  # not in summary.json, so a repeat's is identical
    from ratchet.loop.report import write_report

    write_report(run_dir, summary)
    return {**summary, "minutes": minutes}


def _interval(metrics: dict) -> list[float] | None:
    interval = metric_interval(metrics)
    return list(interval) if interval is not None else None


def _gate(cfg: RunConfig, round_dir: Path, m: dict, metric: str, best: Best, best_path: str) -> tuple[dict, Best, str]:
    """Round ``m`` with its interval and the gate's record (``loop.gate.decide``), also written into
    the round's metrics.json; the best round and the model the next round starts from."""
    value = heldout_value(m) if "skipped_training" not in m else None
    outcomes = heldout_outcomes(gated_eval_dir(round_dir, m), metric) if value is not None else None
    record = decide(cfg.gate, metric, value, outcomes, best)
    kept = record["decision"] == "kept"
    if kept:
        best_path = str(round_dir / "train" / "model")
        if value >= best.value:  # with a tolerance a kept round may lie below the best value so far
            best = Best(int(round_dir.name.removeprefix("round_")), value, outcomes)
    elif "skipped_training" in m:
        m["rollback"] = f"not trained ({m['skipped_training']}); next round starts from {best_path}"
    else:
        m["rollback"] = f"{record['reason']}; next round starts from {best_path}"
    m = {**m, "interval": _interval(m), "gate": record, "kept": kept}
    write_json(round_dir / "metrics.json", m)
    return m, best, best_path


def _summary(cfg: RunConfig, rounds: list[dict], best_path: str, metric: str, base: dict, best: Best) -> dict:
    """summary.json: the rounds, the best model and metric, and what an exact repeat needs to match
    (the seed, and torch's thread count, which changes float sums)."""
    import torch

    summary = {"rounds": rounds, "best_model": best_path, "metric": metric, "metric_start": heldout_value(base),
               "metric_best": best.value, "best_round": best.round, "n_heldout": base["n"],
               "gate": to_dict(cfg.gate), "seed": cfg.seed, "threads": torch.get_num_threads()}
    if "gated" in base:  # the gate read a revision or the goal-conditioned evaluation (loop.run.gated_choice)
        summary.update(gate_on=cfg.evaluate.gate_on, gate_eval=base["gated"]["eval"])
    if metric == "accuracy":  # the names the demo line and earlier summaries use
        summary.update(accuracy_start=heldout_value(base), accuracy_best=best.value)
    return summary
