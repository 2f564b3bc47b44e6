"""``run_loop``: rounds of generate -> judge -> pair -> train -> evaluate, with the ratchet gate.

Directory of a run (every file plain, every stage re-runnable alone from the CLI)::

    runs/<name>/config.yaml            the resolved config
    runs/<name>/heldout.jsonl          held-out prompts (same for every round)
    runs/<name>/round_0/eval/          the starting model on the held-out prompts
    runs/<name>/round_<r>/             prompts, completions, judgments, pairs (.jsonl),
                                       train/ (model/, train_metrics.jsonl), eval/ (metrics.json)
    runs/<name>/summary.json           per-round metrics and which rounds were kept

The gate: a round's model is kept only if its held-out accuracy is not below the best so far
minus ``gate_tolerance``; otherwise the next round starts again from the best model.
"""

from __future__ import annotations

import time
from pathlib import Path

from ratchet.config import RunConfig, save_config
from ratchet.data.records import read_jsonl, write_json
from ratchet.loop import stages
from ratchet.models import load_model, resolve_model


def run_round(cfg: RunConfig, round_dir: Path, model_path: str, heldout: Path, r: int, *, progress: bool = True) -> dict:
    """One round from ``model_path``; returns its metrics (the trained model is in round_dir/train/model)."""
    model, tokenizer = load_model(model_path)
    prompts = stages.make_prompts(cfg.task, "train", round_dir / "prompts.jsonl", seed_offset=r)
    completions = stages.generate(model, tokenizer, prompts, round_dir / "completions.jsonl", cfg.generate,
                                  progress=progress)
    judgments = stages.judge(completions, round_dir / "judgments.jsonl", cfg.judge)
    pairs = stages.pair(completions, judgments, round_dir / "pairs.jsonl", cfg.pair)
    scores = [s for j in read_jsonl(judgments) for s in j["scores"]]
    n_pairs = len(read_jsonl(pairs))
    metrics = {"round": r, "sample_accuracy": sum(scores) / max(len(scores), 1), "pairs": n_pairs}
    if n_pairs == 0:
        metrics["skipped_training"] = "no pairs"
        return metrics
    summary = stages.train(model, tokenizer, pairs, round_dir / "train", cfg.train, progress=progress)
    metrics["train_loss"] = summary["final"].get("loss")
    model.eval()
    metrics.update(stages.evaluate(model, tokenizer, heldout, round_dir / "eval", cfg.evaluate, cfg.judge,
                                   progress=progress))
    return metrics


def run_loop(cfg: RunConfig, *, progress: bool = True) -> dict:
    start = time.time()
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    heldout = stages.make_prompts(cfg.task, "heldout", run_dir / "heldout.jsonl")
    best_path = resolve_model(cfg.model)
    model, tokenizer = load_model(best_path)
    base = stages.evaluate(model, tokenizer, heldout, run_dir / "round_0" / "eval", cfg.evaluate, cfg.judge,
                           progress=progress)
    del model
    rounds = [{"round": 0, **base, "kept": True}]
    best = base["accuracy"]
    for r in range(1, cfg.rounds + 1):
        m = run_round(cfg, run_dir / f"round_{r}", best_path, heldout, r, progress=progress)
        kept = "accuracy" in m and m["accuracy"] >= best - cfg.gate_tolerance
        if kept:
            best, best_path = max(best, m["accuracy"]), str(run_dir / f"round_{r}" / "train" / "model")
        else:
            m["rollback"] = (f"held-out accuracy {m.get('accuracy')} below best {best:.3f} - tolerance "
                             f"{cfg.gate_tolerance}; next round starts from {best_path}")
        rounds.append({**m, "kept": kept})
        write_json(run_dir / "summary.json", {"rounds": rounds, "best_model": best_path})
    summary = {"rounds": rounds, "best_model": best_path, "accuracy_start": base["accuracy"],
               "accuracy_best": best, "n_heldout": base["n"], "minutes": (time.time() - start) / 60}
    write_json(run_dir / "summary.json", summary)
    return summary
