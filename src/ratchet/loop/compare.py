"""SRPO against DPO over revision steps, from the same self-generated pairs (``ratchet compare-revisions``).

The paper's claim (Choi et al. 2024, arXiv 2406.01660, figure 3; docs/algorithms.md#srpo-reported): a
model trained with SRPO gets better each time it revises its own answer, while DPO (and IPO) stay
flat under the same revision prompt. This module reproduces that comparison on a recipe's task:

    pairs        generate -> judge -> pair with the recipe's settings from the base model
                 (or a given pairs file, copied in), one set of pairs for both objectives
    train_dpo/   DPO from the base model  } same lr, epochs, batch size, max_length, seed;
    train_srpo/  SRPO from the base model } reference = the base model for both
    eval_<m>/    base, DPO and SRPO on the same held-out prompts: greedy draft, then
                 ``revise.revisions`` revisions with the one revision prompt (``revise.template``)
    results.json, table.md, revisions.png

Every file lands in the run directory; each stage goes through ``manifest.run_stage``, so a killed
comparison started again skips what finished, and a changed recipe is reported, not mixed in.
It owns the order of the stages and the summary; the stages themselves live in ``loop.stages``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from ratchet.config import LossConfig, RunConfig, save_config, to_dict
from ratchet.data.records import read_jsonl, write_json
from ratchet.loop import stages
from ratchet.loop.manifest import run_stage
from ratchet.loop.model_cache import model_id
from ratchet.models import load_model, resolve_model

MODELS = ("base", "dpo", "srpo")
"""The three models compared, in table order."""


def compare_dir(cfg: RunConfig) -> Path:
    """Where a recipe's comparison lives: ``<runs_dir>/<name>/compare-revisions``."""
    return cfg.run_dir() / "compare-revisions"


def _objectives(cfg: RunConfig, baseline: LossConfig) -> dict[str, LossConfig]:
    """SRPO from the recipe if it names srpo (else SRPO's defaults), and the baseline (DPO)."""
    srpo = cfg.train.loss if cfg.train.loss.name == "srpo" else LossConfig(name="srpo")
    return {"dpo": baseline, "srpo": srpo}


def _load(cfg: RunConfig, path: str):
    return load_model(path, **cfg.model.load_options())


def _make_pairs(cfg: RunConfig, out: Path, given: Path | None, base: str, progress: bool) -> Path:
    """The pairs both objectives train on: a copy of ``given``, or the recipe's generate -> judge -> pair."""
    pairs = out / "pairs.jsonl"
    if given is not None:
        run_stage(out, "pairs", {"source": str(given)}, [given], [pairs], lambda: shutil.copyfile(given, pairs))
        return pairs
    p, c, j = out / "prompts.jsonl", out / "completions.jsonl", out / "judgments.jsonl"
    task = stages.make_task(cfg.task)
    run_stage(out, "prompts", {"task": to_dict(cfg.task), "data": task.fingerprint()}, [], [p],
              lambda: stages.make_prompts(task, "train", p, cfg.task.train_prompts, round=1))
    run_stage(out, "generate", {"generate": to_dict(cfg.generate),
                                "model": model_id(base, cfg.model.load_options())}, [p], [c],
              lambda: stages.generate(*_load(cfg, base), p, c, cfg.generate, task=task, progress=progress))
    run_stage(out, "judge", {"judge": to_dict(cfg.judge)}, [c], [j], lambda: stages.judge(c, j, cfg.judge))
    # DPO and SRPO read the same (x, y_w, y_l) rows: pairs built once, for the paired objectives
    run_stage(out, "pair", {"pair": to_dict(cfg.pair)}, [c, j], [pairs],
              lambda: stages.pair(c, j, pairs, cfg.pair, loss="dpo"))
    return pairs


def _train(cfg: RunConfig, out: Path, name: str, loss: LossConfig, pairs: Path, base: str,
           progress: bool) -> str:
    train_cfg = dataclasses.replace(cfg.train, loss=loss)
    train_dir = out / f"train_{name}"
    run_stage(out, f"train_{name}", {"train": to_dict(train_cfg), "revise_template": cfg.revise.template,
                                     "model": model_id(base, cfg.model.load_options())}, [pairs], [train_dir / "model"],
              lambda: stages.train_model(*_load(cfg, base), pairs, train_dir, train_cfg,
                                   revision_template=cfg.revise.template, progress=progress))
    return str(train_dir / "model")


def _evaluate(cfg: RunConfig, out: Path, name: str, model_path: str, heldout: Path, progress: bool) -> list[float]:
    eval_dir = out / f"eval_{name}"
    run_stage(out, f"eval_{name}", {"revise": to_dict(cfg.revise), "evaluate": to_dict(cfg.evaluate),
                                    "judge": to_dict(cfg.judge),
                                    "model": model_id(model_path, cfg.model.load_options())},
              [heldout], [eval_dir / "metrics.json"],
              lambda: stages.evaluate_revisions(*_load(cfg, model_path), heldout, eval_dir, cfg.revise,
                                                cfg.evaluate, cfg.judge, task=stages.make_task(cfg.task),
                                                progress=progress))
    return json.loads((eval_dir / "metrics.json").read_text())["accuracy_per_revision"]


def compare_revisions(cfg: RunConfig, *, pairs: Path | None = None, baseline: LossConfig | None = None,
                      progress: bool = True) -> dict:
    """Run (or resume) the comparison; return and write ``results.json``, ``table.md``, ``revisions.png``.

    ``cfg.revise.revisions`` (>= 1) is N; ``pairs`` replaces the self-generated pairs; ``baseline``
    is the objective SRPO is compared with (default: DPO with its registry defaults)."""
    if cfg.revise.revisions < 1:
        raise ValueError(f"revise.revisions: the comparison needs at least one revision, got {cfg.revise.revisions}")
    if pairs is not None and not Path(pairs).is_file():
        raise FileNotFoundError(f"pairs file {pairs} does not exist")
    start = time.time()
    out = compare_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    base = resolve_model(cfg.model.path, revision=cfg.model.revision)
    heldout = out / "heldout.jsonl"
    task = stages.make_task(cfg.task)
    task.check()  # a missing file or column fails here, before any model loads
    run_stage(out, "heldout", {"task": to_dict(cfg.task), "data": task.fingerprint()}, [], [heldout],
              lambda: stages.make_prompts(task, "heldout", heldout, cfg.task.heldout_prompts))
    pairs_path = _make_pairs(cfg, out, Path(pairs) if pairs else None, base, progress)
    n_pairs = len(read_jsonl(pairs_path))
    if n_pairs == 0:
        raise ValueError(f"{pairs_path} holds no pairs: nothing to train on (more prompts or a larger k?)")
    objectives = _objectives(cfg, baseline or LossConfig(name="dpo"))
    models = {"base": base}
    for name, loss in objectives.items():
        models[name] = _train(cfg, out, name, loss, pairs_path, base, progress)
    accuracy = {name: _evaluate(cfg, out, name, models[name], heldout, progress) for name in MODELS}
    results = {"revisions": cfg.revise.revisions, "n_heldout": len(read_jsonl(heldout)), "pairs": n_pairs,
               "accuracy": accuracy, "models": models,
               "objectives": {k: {"name": v.name, **v.params} for k, v in objectives.items()},
               "train_seconds": {k: _seconds(out, f"train_{k}") for k in ("dpo", "srpo")},
               "minutes": round((time.time() - start) / 60, 2)}
    write_json(out / "results.json", results)
    (out / "table.md").write_text(markdown_table(results) + "\n")
    try:
        from ratchet.evaluate.revisions import plot_revisions

        plot_revisions(accuracy, out / "revisions.png", title=f"held-out accuracy (n={results['n_heldout']})")
    except ImportError:  # matplotlib is the optional [plot] extra
        pass
    return results


def _seconds(out: Path, stage: str) -> float | None:
    """The stage's run time from the manifest (None if it was never timed)."""
    return json.loads((out / "manifest.json").read_text())["stages"].get(stage, {}).get("seconds")


def markdown_table(results: dict) -> str:
    """Held-out accuracy of each model at each revision step (0 = the draft), as a markdown table."""
    steps = range(results["revisions"] + 1)
    lines = ["| model | " + " | ".join(f"rev {k}" for k in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for name in MODELS:
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in results["accuracy"][name]) + " |")
    return "\n".join(lines) + (f"\n\n{results['n_heldout']} held-out problems; DPO and SRPO trained on the same "
                               f"{results['pairs']} pairs.")


def summary_line(results: dict) -> str:
    """The one-line verdict: SRPO and DPO at the draft and after the last revision."""
    n, srpo, dpo = results["revisions"], results["accuracy"]["srpo"], results["accuracy"]["dpo"]
    return (f"srpo_vs_dpo: srpo_rev0={srpo[0]:.3f} srpo_revN={srpo[n]:.3f} "
            f"dpo_rev0={dpo[0]:.3f} dpo_revN={dpo[n]:.3f} N={n}")
