"""Several recipes x several seeds as one experiment (``ratchet sweep A.yaml B.yaml --seeds 3``).

This module owns the sweep's plan (one run per recipe and seed), skipping finished runs, and the
aggregate table; the runs themselves are ordinary ``run_loop`` runs, read back through
``compare_runs.load_run``.

    runs_dir/<sweep>/<recipe name>-s<seed>/   one run directory each (``ratchet report`` / ``compare`` work on it)
    runs_dir/<sweep>/sweep.json               the plan, every run's per-round values, the table
    runs_dir/<sweep>/sweep.md                 the table in markdown (for docs/evidence.md)

Each run gets the user's overrides, then its seed (the top-level ``seed``, from which
every section's seed is derived), run name and runs_dir. The seed moves every random choice of a
run: the task's draws (the built-in generators also draw the held-out problems from it, so each
seed is measured on its own held-out set), sampling, pair choice and training order. Runs go one
after another in this process, so no two share the CPU or GPU while they are timed. Resumable: a
finished run (the loop's final ``summary.json``, with every round) is skipped, after checking that
its saved config is the one this sweep would run; any other is handed to ``run_loop``, which
resumes itself stage by stage. Minutes are the loop's own (``compare_runs.load_run``): a resumed
run's count its last session only.

The interval: a 95% Student t interval across seeds, mean +- t(0.975, n-1) * sd / sqrt(n), on each
seed's value. With 3 seeds a bootstrap over seeds has only 10 distinct resamples and its percentile
interval is narrower than the spread it is meant to show; the t interval is wide (t = 4.30 at
2 degrees of freedom) and honest about how little 3 seeds say. ``gain`` is the same interval on
each seed's difference from its own round 0 (paired: the seed's held-out set and base model cancel).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from ratchet.config import SEEDED_SECTIONS, ConfigError, RunConfig, load_config, to_dict
from ratchet.data.records import write_json
from ratchet.loop.compare_runs import Run, load_run

SEEDED = tuple(f"{section}.seed" for section in SEEDED_SECTIONS)
"""The seeds a run's seed must move (a recipe that sets one itself would hold it fixed: an error)."""
RESERVED = ("name", "runs_dir", "seed") + SEEDED
"""Keys the sweep sets per run; an override of one would be overwritten or hold a seed fixed: an error."""

# t(0.975, df) for df = 1..30 (checked against a numeric integral of the t density to 1e-5).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the table up to 30, then the
    Cornish-Fisher expansion around the normal quantile (error < 1e-4 from 30 on)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of ``values`` with a 95% t interval; no interval from one value, nothing from none."""
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def parse_seeds(seeds: int | None, seed_list: str | None) -> list[int]:
    """``--seeds N`` (0..N-1) or ``--seed-list 0,5,7``; one of them (default: 3 seeds)."""
    if seeds is not None and seed_list is not None:
        raise ConfigError("sweep: give --seeds N or --seed-list, not both")
    if seed_list is None:
        n = 3 if seeds is None else seeds
        if n < 1:
            raise ConfigError(f"sweep --seeds: expected >= 1, got {n}")
        return list(range(n))
    try:
        out = [int(s) for s in seed_list.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"sweep --seed-list: expected integers separated by commas, e.g. 0,5,7; "
                          f"got {seed_list!r}") from None
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise ConfigError(f"sweep --seed-list: expected distinct seeds >= 0, got {seed_list!r}")
    return out


@dataclass
class PlannedRun:
    recipe: str
    """The recipe's run name (``name`` in it)."""
    seed: int
    cfg: RunConfig


def plan(recipes: list[str], seeds: list[int], overrides: list[str] = (), runs_dir: str = "runs",
         name: str | None = None) -> tuple[Path, list[PlannedRun]]:
    """The sweep's directory and its runs, recipe by recipe, seed by seed; every config is loaded
    (and so checked) before anything runs."""
    if not recipes:
        raise ConfigError("sweep: give at least one recipe")
    for item in overrides:
        if item.split("=", 1)[0].strip() in RESERVED:
            raise ConfigError(f"sweep: override {item!r}: the sweep sets {', '.join(RESERVED)} for each run "
                              "(--runs-dir, --name, --seeds)")
    names = {}
    for recipe in recipes:
        recipe_name = load_config(recipe, list(overrides)).name
        if recipe_name in names:
            raise ConfigError(f"sweep: recipes {names[recipe_name]} and {recipe} share the name {recipe_name!r}; "
                              "their run directories would collide (give one another name)")
        names[recipe_name] = recipe
    sweep_dir = Path(runs_dir) / (name or _default_name(list(names)))
    runs = [PlannedRun(recipe_name, seed, load_config(recipe, [
        *overrides, f"seed={seed}", f"name={recipe_name}-s{seed}",
        f"runs_dir={sweep_dir}"])) for recipe_name, recipe in names.items() for seed in seeds]
    for recipe_name, recipe in names.items():
        for key in SEEDED:
            values = {_value(run.cfg, key) for run in runs if run.recipe == recipe_name}
            if len(values) < len(seeds):
                raise ConfigError(f"sweep: {recipe} sets {key} itself, so the sweep's seeds do not move it; "
                                  "remove it from the recipe")
    return sweep_dir, runs


def _value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _default_name(recipe_names: list[str]) -> str:
    return "-vs-".join(recipe_names) if len(recipe_names) > 1 else f"{recipe_names[0]}-sweep"


def _dotted(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_finished(cfg: RunConfig) -> bool:
    """Whether the run's ``summary.json`` is the loop's final one (``metric_best``, written only at
    its end, after each round's partial summary) with every round. A finished run whose saved config
    differs from ``cfg`` is a ConfigError naming the keys, never silently counted as this sweep's."""
    try:
        summary = json.loads((cfg.run_dir() / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(summary, dict) or "metric_best" not in summary \
            or len(summary.get("rounds") or []) != cfg.rounds + 1:
        return False
    config_path = cfg.run_dir() / "config.yaml"
    if not config_path.is_file():  # a summary without the config the loop writes first: not a run of ours
        raise ConfigError(f"sweep: {cfg.run_dir()} has a summary.json but no config.yaml; delete it to redo the run")
    saved = _dotted(yaml.safe_load(config_path.read_text()) or {})
    wanted = _dotted(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    changed = [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
               if saved.get(k) != wanted.get(k)]
    if changed:
        raise ConfigError(f"sweep: {cfg.run_dir()} finished with another config ({'; '.join(changed)}); "
                          "give the sweep another --name, or delete that run directory to redo it")
    return True


def run_sweep(recipes: list[str], seeds: list[int], overrides: list[str] = (), runs_dir: str = "runs",
              name: str | None = None, *, progress: bool = True, console: Console | None = None) -> dict:
    """Run every recipe with every seed (finished runs skipped), then write sweep.json and sweep.md
    and print the table. Returns what sweep.json holds."""
    from ratchet.loop.run import run_loop  # lazily: torch and the models load only when a run runs

    console = console or Console()
    sweep_dir, runs = plan(recipes, seeds, overrides, runs_dir, name)
    for i, run in enumerate(runs, 1):
        where = f"sweep {i}/{len(runs)}: {run.recipe} seed {run.seed} -> {run.cfg.run_dir()}"
        if is_finished(run.cfg):
            console.print(f"{where} (finished: skipped)")
            continue
        console.print(where)
        run_loop(run.cfg, progress=progress)
    result = summarize(runs, sweep_dir, recipes=list(recipes), seeds=list(seeds), overrides=list(overrides))
    write_json(sweep_dir / "sweep.json", result)
    (sweep_dir / "sweep.md").write_text(sweep_markdown(result))
    console.print(sweep_table(result))
    return result


def _recipe_rows(recipe: str, loaded: list[Run]) -> list[dict]:
    """One row per round: the mean of the seeds' values with its t interval, the paired gain from
    round 0, and how many seeds kept the round."""
    rounds = sorted({p.round for run in loaded for p in run.rounds})
    by_round = [{p.round: p for p in run.rounds} for run in loaded]
    rows = []
    for r in rounds:
        points = [lookup[r] for lookup in by_round if r in lookup and lookup[r].value is not None]
        mean, low, high = t_interval([p.value for p in points])
        gains = [lookup[r].value - lookup[0].value for lookup in by_round
                 if r in lookup and 0 in lookup and None not in (lookup[r].value, lookup[0].value)]
        gain, gain_low, gain_high = t_interval(gains) if r > 0 else (None, None, None)
        rows.append({"recipe": recipe, "metric": loaded[0].metric, "round": r, "n": len(points), "mean": mean,
                     "low": low, "high": high, "gain": gain, "gain_low": gain_low, "gain_high": gain_high,
                     "kept": sum(1 for p in points if p.kept) if r > 0 else None})
    return rows


def summarize(runs: list[PlannedRun], sweep_dir: Path, **about) -> dict:
    """sweep.json's content: ``about`` (recipes, seeds, overrides), every run's values per round, and
    the table (``rows``; ``minutes``: each recipe's mean over its seeds, None if a run has no total)."""
    loaded = {run.cfg.run_dir(): load_run(run.cfg.run_dir()) for run in runs}
    recipes = list(dict.fromkeys(run.recipe for run in runs))
    rows, minutes = [], {}
    for recipe in recipes:
        mine = [loaded[run.cfg.run_dir()] for run in runs if run.recipe == recipe]
        rows += _recipe_rows(recipe, mine)
        times = [r.minutes for r in mine]
        minutes[recipe] = statistics.fmean(times) if None not in times else None
    per_run = [{"recipe": run.recipe, "seed": run.seed, "path": str(run.cfg.run_dir()),
                "metric": loaded[run.cfg.run_dir()].metric, "minutes": loaded[run.cfg.run_dir()].minutes,
                "values": [p.value for p in loaded[run.cfg.run_dir()].rounds],
                "kept": [p.kept for p in loaded[run.cfg.run_dir()].rounds]} for run in runs]
    return {"name": sweep_dir.name, "path": str(sweep_dir), **about,
            "interval": "95% Student t interval across seeds (n-1 degrees of freedom); none from one seed",
            "runs": per_run, "rows": rows, "minutes": minutes}


COLUMNS = ("recipe", "round", "seeds", "held-out metric: mean [95% t interval]", "gain vs round 0 [95% t interval]",
           "kept", "minutes (mean)")


def _cells(result: dict) -> list[list[str]]:
    def number(mean, low, high, sign=""):
        if mean is None:
            return "-"
        return f"{mean:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]" if low is not None else f"{mean:{sign}.3f}"

    out, seen = [], set()
    for row in result["rows"]:
        first = row["recipe"] not in seen
        seen.add(row["recipe"])
        minutes = result["minutes"][row["recipe"]]
        out.append([row["recipe"] if first else "", str(row["round"]), str(row["n"]),
                    f"{row['metric']} " + number(row["mean"], row["low"], row["high"]),
                    number(row["gain"], row["gain_low"], row["gain_high"], "+") if row["round"] > 0 else "-",
                    f"{row['kept']}/{row['n']}" if row["round"] > 0 else "base",
                    ("-" if minutes is None else f"{minutes:.1f}") if first else ""])
    return out


def caption(result: dict) -> str:
    return (f"seeds {', '.join(map(str, result['seeds']))}; {result['interval']}; gain: each seed's "
            "difference from its own round 0; kept: seeds whose gate kept the round")


def sweep_table(result: dict) -> Table:
    table = Table(title=f"ratchet sweep {result['name']}", caption=caption(result))
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i == 0 else "right")
    for cells in _cells(result):
        if cells[0] and table.row_count:
            table.add_section()
        table.add_row(*cells)
    return table


def sweep_markdown(result: dict) -> str:
    lines = [f"### ratchet sweep {result['name']}", "",
             f"Recipes: {', '.join(result['recipes'])}; overrides: {' '.join(result['overrides']) or 'none'}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(result)]
    return "\n".join(lines + ["", caption(result) + ".", ""])
