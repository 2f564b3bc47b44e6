"""ratchet: make a language model improve itself from its own outputs, and prove the gain.

    ratchet models                                   known model names
    ratchet config [RECIPE] [--list]                 every key: type, default, value, doc (bundled recipes)
    ratchet demo [key=value ...]                     one round on the embedded model, before/after table
    ratchet loop RECIPE.yaml [key=value ...]         rounds with the ratchet gate
    ratchet revise   --model M --revisions N --input P --out F   draft, then N self-revisions
    ratchet compare-revisions --recipe R [--pairs P]  base, DPO, SRPO from the same pairs, per revision
    ratchet report RUN_DIR                           regenerate report.html and print the summary
    ratchet compare RUN RUN... [--out compare.html]  runs side by side: metric per round with intervals
    ratchet sweep RECIPE... [key=value ...] --seeds N  every recipe x seed; mean and 95% interval per round
    ratchet prompts  --split train|heldout --out P   task prompts
    ratchet generate --model M --prompts P --out C   k completions per prompt
    ratchet judge    --completions C --out J
    ratchet self-score --model M --completions C --out S   log pi(y|x) of each sample (SFT-sharpening)
    ratchet pair     --completions C --judgments J --out PAIRS [--self-scores S]   (SFT rows for sft objectives)
    ratchet train    --model M --pairs PAIRS --out DIR [--skip-invalid] [--resume]
    ratchet train-rm --model M --pairs PAIRS --out DIR [--lora-r R]   a Bradley-Terry reward model (judge reward_model)
    ratchet evaluate --model M --prompts P --out DIR
    ratchet export   --pairs P [--format trl] --out F   pairs for other trainers (TRL's conversational rows)
    ratchet export   --model RUN_OR_DIR --to DIR [--push-to-hub REPO]   a standard model directory + model card

Every command takes ``--recipe R.yaml`` and trailing ``key=value`` overrides (dotted keys, e.g.
``train.lr=1e-5 train.loss.beta=0.2``); stage commands save the resolved config in their output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable

from ratchet import __version__
from ratchet.config import ConfigError, RunConfig, load_config, save_config
from ratchet.console import configure_threads, quiet_libraries
from ratchet.data.records import RecordError
from ratchet.loop.manifest import StaleStageError
from ratchet.models import ModelNotFoundError


DEMO_RECIPE = "arithmetic-dpo"


def _config(args, cfg: RunConfig) -> None:
    from ratchet.config import bundled_recipes, describe

    print("\n".join(bundled_recipes()) if args.list else describe(cfg))


def _models(args, cfg: RunConfig) -> None:
    from ratchet.models import KNOWN_MODELS, ratchet_home

    for name, spec in KNOWN_MODELS.items():
        cached = (ratchet_home() / "models" / name / "config.json").exists()
        print(f"{name:16s} {spec.description} [{'cached' if cached else 'from ' + spec.package}]")


def _loop(args, cfg: RunConfig) -> None:
    from ratchet.loop.report import print_summary
    from ratchet.loop.run import run_loop

    summary = run_loop(cfg)
    print_summary(summary)
    metric, start, best = summary["metric"], summary["metric_start"], summary["metric_best"]
    if args.command == "demo":
        print(f"demo: {metric} {start:.3f} -> {best:.3f} on {summary['n_heldout']} held-out problems")
    else:
        kept = sum(1 for r in summary["rounds"][1:] if r["kept"])
        print(f"loop: rounds={cfg.rounds} {metric} {start:.3f} -> {best:.3f} kept={kept} "
              f"minutes={summary['minutes']:.1f}")


def _report(args, cfg: RunConfig) -> None:
    import json

    from ratchet.loop.report import print_summary, write_report

    run = Path(args.run)
    summary_path = run / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"ratchet: {summary_path} does not exist; is {run} a run directory?")
    summary = json.loads(summary_path.read_text())
    print_summary(summary)
    print(write_report(run, summary))


def _compare(args, cfg: RunConfig) -> None:
    from ratchet.loop.compare_runs import compare_runs

    print(compare_runs(args.runs, args.out))


def _sweep(args, cfg: RunConfig) -> None:
    from ratchet.loop.sweep import parse_seeds, run_sweep

    # recipes and overrides share the positionals (argparse gives them all to the first)
    items = [*args.recipes, *args.overrides]
    result = run_sweep([x for x in items if "=" not in x], parse_seeds(args.seeds, args.seed_list),
                       [x for x in items if "=" in x], runs_dir=args.runs_dir, name=args.name)
    print(f"{result['path']}/sweep.json")


def _stage_output(path: str, cfg: RunConfig) -> tuple[Path, Callable[[], None]]:
    """The stage's output path, and a function that saves the resolved config beside it (inside an
    output directory). Call it after the stage succeeded: a failed run leaves a finished one's config."""
    out = Path(path)
    return out, lambda: save_config(cfg, (out if not out.suffix else out.parent) / f"{out.stem}.config.yaml")


def _prompts(args, cfg):
    from ratchet.loop import stages

    n = cfg.task.train_prompts if args.split == "train" else cfg.task.heldout_prompts
    out, save = _stage_output(args.out, cfg)
    written = stages.make_prompts(stages.make_task(cfg.task), args.split, out, n, round=args.round)
    save()
    print(written)


def _file_task(cfg):
    """The recipe's task when it is a data file (its stop strings); built-in tasks are known by
    the name their rows carry."""
    from ratchet.loop import stages

    return stages.make_task(cfg.task) if cfg.task.source else None


def _generate(args, cfg):
    from ratchet.loop import stages
    from ratchet.models import load_model

    model, tok = load_model(args.model, **cfg.model.load_options())
    out, save = _stage_output(args.out, cfg)
    written = stages.generate(model, tok, Path(args.prompts), out, cfg.generate, task=_file_task(cfg))
    save()
    print(written)


def _judge(args, cfg):
    from ratchet.loop import stages
    from ratchet.models import load_model

    policy = (lambda: load_model(args.model, **cfg.model.load_options())) if args.model else None
    out, save = _stage_output(args.out, cfg)
    written = stages.judge(Path(args.completions), out, cfg.judge, policy=policy)
    save()
    print(written)


def _pair(args, cfg):
    from ratchet.loop import stages

    out, save = _stage_output(args.out, cfg)
    written = stages.pair(Path(args.completions), Path(args.judgments), out, cfg.pair, loss=cfg.train.loss.name,
                          self_scores=Path(args.self_scores) if args.self_scores else None)
    save()
    print(written)


def _self_score(args, cfg):
    from ratchet.loop import stages
    from ratchet.models import load_model

    model, tok = load_model(args.model, **cfg.model.load_options())
    out, save = _stage_output(args.out, cfg)
    written = stages.self_score(model, tok, Path(args.completions), out, batch_size=cfg.generate.batch_size)
    save()
    print(written)


def _train(args, cfg):
    from ratchet.loop import stages
    from ratchet.models import load_model
    from ratchet.train.batches import SKIP_HINT

    model, tok = load_model(args.model, **cfg.model.load_options())
    out, save = _stage_output(args.out, cfg)
    summary = stages.train_model(model, tok, Path(args.pairs), out, cfg.train, skip_invalid=args.skip_invalid,
                           revision_template=cfg.revise.template, resume=args.resume, invalid_hint=SKIP_HINT)
    save()
    print(f"train: {summary['pairs']} pairs, {summary['steps']} steps, final loss {summary['final'].get('loss')}, "
          f"skipped {summary['skipped']}, truncated {summary['truncated']} -> {out / 'model'}")


def _train_rm(args, cfg):
    from ratchet.train.reward_model import train_reward_model

    lora = {"r": args.lora_r, "alpha": cfg.train.lora.alpha, "dropout": cfg.train.lora.dropout,
            "target_modules": cfg.train.lora.target_modules} if args.lora_r > 0 else None
    out, save = _stage_output(args.out, cfg)
    try:
        summary = train_reward_model(args.model, Path(args.pairs), out, lr=args.lr, epochs=args.epochs,
                                     batch_size=args.batch_size, max_length=args.max_length,
                                     heldout_fraction=args.heldout_fraction, lora=lora,
                                     seed=cfg.train.seed if args.seed is None else args.seed,
                                     device=cfg.model.device, dtype=cfg.model.dtype)
    except ValueError as e:  # an option out of range
        raise ConfigError(f"train-rm: {e}") from None
    save()
    print(f"train-rm: {summary['train_pairs']} pairs, train loss {summary['train_loss']:.4f}, held-out pairwise "
          f"accuracy {summary['heldout_accuracy']} on {summary['heldout_pairs']} -> {out / 'model'} "
          f"(judge: reward_model, model: {out / 'model'})")


def _evaluate(args, cfg):
    from ratchet.loop import stages
    from ratchet.models import load_model

    model, tok = load_model(args.model, **cfg.model.load_options())
    out, save = _stage_output(args.out, cfg)
    if cfg.revise.revisions > 0:
        m = stages.evaluate_revisions(model, tok, Path(args.prompts), out, cfg.revise, cfg.evaluate, cfg.judge,
                                      task=_file_task(cfg))
        save()
        steps = " ".join(f"{a:.3f}" for a in m["accuracy_per_revision"])
        print(f"evaluate: accuracy per revision {steps} (n={m['n']})")
        return
    m = stages.evaluate(model, tok, Path(args.prompts), out, cfg.evaluate, cfg.judge, task=_file_task(cfg))
    save()
    extra = f" ({m['correct']}/{m['n']})" if m["metric"] == "accuracy" else f" (n={m['n']})"
    print(f"evaluate: {m['metric']} {m[m['metric']]:.3f}{extra}")


def _revise(args, cfg):
    import dataclasses

    from ratchet.loop import stages
    from ratchet.models import load_model

    if args.revisions is not None:
        cfg = dataclasses.replace(cfg, revise=dataclasses.replace(cfg.revise, revisions=args.revisions))
    model, tok = load_model(args.model, **cfg.model.load_options())
    out, save = _stage_output(args.out, cfg)
    written = stages.revise(model, tok, Path(args.input), out, cfg.revise, cfg.evaluate, task=_file_task(cfg))
    save()
    print(written)


def _compare_revisions(args, cfg):
    from ratchet.loop.compare import compare_revisions, markdown_table, summary_line

    results = compare_revisions(cfg, pairs=Path(args.pairs) if args.pairs else None)
    print(markdown_table(results))
    print(summary_line(results))  # last line, for scripts


def _export(args, cfg):
    if bool(args.pairs) == bool(args.model):
        raise ConfigError("export: give either --pairs PATH --out FILE, or --model DIR --to DIR")
    if args.model:
        from ratchet.loop.export import export_model

        if not args.to:
            raise ConfigError("export --model: give --to DIR (where the model directory is written)")
        print(export_model(args.model, args.to, push_to_hub=args.push_to_hub))
        return
    from ratchet.data.trl_format import export_pairs

    if not args.out:
        raise ConfigError("export --pairs: give --out FILE")
    print(export_pairs(Path(args.pairs), Path(args.out), format=args.format))


MODEL = ("--model", dict(required=True, help="model: a known name (ratchet models), a model directory or a hub id"))
OUT_FILE = ("--out", dict(required=True, help="output JSONL file (its resolved config is saved beside it)"))
COMMANDS = {
    "models": (_models, "list the known model names", []),
    "demo": (_loop, "one self-improvement round of the embedded model on arithmetic (the demo recipe)", []),
    "loop": (_loop, "rounds of generate -> judge -> pair -> train -> evaluate, kept only if the held-out metric holds",
             [("recipe_pos", dict(nargs="?",
                                  help="recipe YAML, or the name of a bundled recipe (ratchet config --list)"))]),
    "config": (_config, "every config key with its type, default, value and doc (for a recipe, if given)",
               [("recipe_pos", dict(nargs="?", help="recipe YAML or bundled recipe name")),
                ("--list", dict(action="store_true", help="list the bundled recipes instead"))]),
    "revise": (_revise, "draft, then N self-revisions by the same model (SRPO's inference)",
               [MODEL, ("--revisions", dict(type=int, default=None, help="revision steps (default: revise.revisions)")),
                ("--input", dict(required=True, help="prompts JSONL")), OUT_FILE]),
    "compare-revisions": (_compare_revisions, "train DPO and SRPO on the same pairs; accuracy per revision step",
                          [("--pairs", dict(default=None, help="pairs JSONL to train both on "
                                                                "(default: generate -> judge -> pair)"))]),
    "report": (_report, "regenerate a run's report.html and print its summary table",
               [("run", dict(help="run directory, e.g. runs/arithmetic-dpo"))]),
    "compare": (_compare, "runs side by side: held-out metric per round with its interval, kept rounds, minutes",
                [("runs", dict(nargs="+", help="run directories, e.g. runs/arithmetic-dpo runs/arithmetic-kto")),
                 ("--out", dict(default="compare.html", help="the HTML page with the table and plot "
                                                             "(default compare.html)"))]),
    "sweep": (_sweep, "every recipe with every seed, one run each (resumable); mean and 95% interval per round",
              [("recipes", dict(nargs="+", help="recipe YAMLs or bundled recipe names, then key=value overrides "
                                                "applied to every run")),
               ("--seeds", dict(type=int, default=None, help="seeds 0..N-1 (default 3)")),
               ("--seed-list", dict(default=None, help="these seeds instead, e.g. 0,5,7")),
               ("--runs-dir", dict(default="runs", help="where the sweep's folder goes (default runs)")),
               ("--name", dict(default=None, help="the sweep's folder name (default: the recipe names joined "
                                                  "by -vs-)"))]),
    "prompts": (_prompts, "write the task's prompts (a training round's draw, or the held-out split)",
                [("--split", dict(choices=["train", "heldout"], default="train", help="which split (default train)")),
                 OUT_FILE, ("--round", dict(type=int, default=1, help="which round's training draw (default 1)"))]),
    "generate": (_generate, "sample generate.k completions per prompt",
                 [MODEL, ("--prompts", dict(required=True, help="prompts JSONL")), OUT_FILE]),
    "judge": (_judge, "score every completion with the recipe's judge",
              [("--completions", dict(required=True, help="completions JSONL")), OUT_FILE,
               ("--model", dict(default=None, help="the policy, for a judge that is the policy itself "
                                                   "(judge.name=llm, judge.params.model=policy)"))]),
    "self-score": (_self_score, "the model's own log-likelihood of each of its samples (SFT-sharpening)",
                   [MODEL, ("--completions", dict(required=True, help="completions JSONL")), OUT_FILE]),
    "pair": (_pair, "turn judged completions into preference pairs (or SFT / unpaired rows, by objective)",
             [("--completions", dict(required=True, help="completions JSONL")),
              ("--judgments", dict(required=True, help="judgments JSONL")), OUT_FILE,
              ("--self-scores", dict(default=None, help="self-score rows (for pair.selection: self_loglik)"))]),
    "train": (_train, "train on a pairs file (ratchet's or TRL's preference formats)",
              [MODEL, ("--pairs", dict(required=True, help="pairs JSONL")),
               ("--out", dict(required=True, help="output directory (model/, metrics, checkpoints)")),
               ("--skip-invalid", dict(action="store_true", help="skip (and count) rows that do not fit, "
                                                                  "instead of stopping at the first")),
               ("--resume", dict(action="store_true", help="continue from the newest checkpoint in OUT/checkpoints"))]),
    "train-rm": (_train_rm, "train a Bradley-Terry reward model on a pairs file; usable as the reward_model judge",
                 [MODEL, ("--pairs", dict(required=True, help="pairs JSONL (ratchet's or TRL's preference formats)")),
                  ("--out", dict(required=True, help="output directory (model/ and rm_summary.json)")),
                  ("--lr", dict(type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")),
                  ("--epochs", dict(type=int, default=1, help="passes over the training pairs (default 1)")),
                  ("--batch-size", dict(type=int, default=8, help="pairs per optimizer step (default 8)")),
                  ("--max-length", dict(type=int, default=512, help="tokens per conversation, cut from the left "
                                                                     "(default 512)")),
                  ("--heldout-fraction", dict(type=float, default=0.1, help="share of pairs held out for the "
                                                                            "pairwise accuracy (default 0.1)")),
                  ("--lora-r", dict(type=int, default=0, help="LoRA rank, 0 = full fine-tuning (alpha, dropout, "
                                                              "modules from train.lora; merged at the end)")),
                  ("--seed", dict(type=int, default=None, help="split, order and head seed (default train.seed)"))]),
    "evaluate": (_evaluate, "greedy answers to held-out prompts, judged; the held-out metric",
                 [MODEL, ("--prompts", dict(required=True, help="prompts JSONL")),
                  ("--out", dict(required=True, help="output directory (answers, judgments, metrics.json)"))]),
    "export": (_export, "pairs in TRL's format, or a run's model as a standard model directory with a card",
               [("--pairs", dict(default=None, help="pairs JSONL (ratchet's or TRL's formats)")),
                ("--format", dict(choices=["trl"], default="trl", help="pairs format to write (default trl)")),
                ("--out", dict(default=None, help="with --pairs: the output JSONL")),
                ("--model", dict(default=None, help="a model directory, a run directory or <run>/best")),
                ("--to", dict(default=None, help="with --model: where the exported model directory goes")),
                ("--push-to-hub", dict(default=None, help="hub repo id to upload it to (online)"))]),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratchet", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ratchet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, description, arguments) in COMMANDS.items():
        # argparse %-formats help (not descriptions): "95% interval" must reach it as "95%% interval"
        s = sub.add_parser(name, help=description.replace("%", "%%"), description=description)
        for flag, kw in arguments:
            s.add_argument(flag, **kw)
        if name not in ("config", "sweep"):  # sweep: its recipes are positional
            s.add_argument("--recipe", help="recipe YAML or bundled recipe name (default: the built-in defaults)")
        s.add_argument("--verbose", action="store_true", help="show the libraries' own loading messages too")
        s.add_argument("overrides", nargs="*", default=[],  # default: argparse calls a bare "*" required
                       help="key=value overrides with dotted keys, e.g. train.lr=1e-5")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    recipe = getattr(args, "recipe_pos", None) or getattr(args, "recipe", None)
    if args.command == "demo" and recipe is None:
        recipe = DEMO_RECIPE  # `ratchet demo` runs exactly what `make demo` runs
    overrides = list(args.overrides)
    if recipe and "=" in recipe:  # `ratchet loop rounds=3` without a recipe
        overrides, recipe = [recipe] + overrides, None
    note = configure_threads()  # before torch loads: a busy core must not stall every OpenMP barrier
    if note and args.command in ("demo", "loop", "sweep", "generate", "train", "train-rm", "evaluate", "revise",
                                  "self-score"):
        print(note, file=sys.stderr)
    try:
        cfg = load_config(recipe, overrides)
        if getattr(args, "model", None) and args.command != "export":  # the saved config names what ran
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=args.model))
        COMMANDS[args.command][0](args, cfg)
    except ConfigError as e:
        print(f"ratchet: config error: {e}", file=sys.stderr)
        return 2
    except (RecordError, ModelNotFoundError) as e:  # bad input files or model: the message says which
        print(f"ratchet: {e}", file=sys.stderr)
        return 2
    except StaleStageError as e:
        print(f"ratchet: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # `ratchet config | head`: the reader left; no traceback (Python docs, "SIGPIPE")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail too
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
