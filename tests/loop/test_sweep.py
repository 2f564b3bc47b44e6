"""``ratchet sweep``: 2 recipes x 2 seeds x 1 round on the tiny model; the table against the runs'
summary.json by hand; resume skips finished runs and resumes partial ones; the t interval; bad input."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml

from conftest import tiny_run_overrides
from ratchet import cli
from ratchet.config import ConfigError, to_dict
from ratchet.loop import run as run_module
from ratchet.loop import stages
from ratchet.loop.compare_runs import load_run
from ratchet.loop.sweep import SEEDED, parse_seeds, plan, run_sweep, t_interval, t_quantile_975

# held-out metric per evaluation, in call order: (recipe, seed) -> (round 0, round 1)
SCRIPT = {("a", 0): (0.5, 0.6), ("a", 1): (0.3, 0.2), ("b", 0): (0.4, 0.7), ("b", 1): (0.6, 0.9)}


@pytest.fixture
def scripted(scripted_accuracy):
    """Evaluations return SCRIPT's values in run order, so the sweep's table is known in advance."""
    scripted_accuracy.extend(v for pair in SCRIPT.values() for v in pair)
    return scripted_accuracy


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _recipes(tmp_path):
    paths = []
    for name, top_p in (("a", 1.0), ("b", 0.9)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "generate": {"top_p": top_p}}))
        paths.append(str(path))
    return paths


def _overrides(tmp_path, model_dir):
    return [o for o in tiny_run_overrides(tmp_path, model_dir) if o.split("=")[0] not in ("name", "runs_dir")]


def _by_hand(sweep_dir, recipe, seeds=(0, 1)):
    """Round 0 and round 1 rows computed straight from each run's summary.json."""
    summaries = [json.loads((sweep_dir / f"{recipe}-s{s}" / "summary.json").read_text()) for s in seeds]
    rows = []
    for r in (0, 1):
        values = [s["rounds"][r][s["metric"]] for s in summaries]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        half = 12.706 * sd / math.sqrt(2)  # t(0.975, 1 degree of freedom)
        gains = [s["rounds"][r][s["metric"]] - s["rounds"][0][s["metric"]] for s in summaries]
        g_half = 12.706 * statistics.stdev(gains) / math.sqrt(2)
        rows.append({"mean": mean, "low": mean - half, "high": mean + half, "n": 2,
                     "kept": sum(s["rounds"][r]["kept"] for s in summaries) if r else None,
                     "gain": statistics.fmean(gains) if r else None,
                     "gain_low": statistics.fmean(gains) - g_half if r else None,
                     "gain_high": statistics.fmean(gains) + g_half if r else None})
    return rows, statistics.fmean(load_run(sweep_dir / f"{recipe}-s{s}").minutes for s in seeds)


@pytest.mark.slow
def test_sweep_table_matches_the_runs_and_resumes(tmp_path, tiny_model_dir, length_judge, scripted, monkeypatch,
                                                  capsys):
    a, b = _recipes(tmp_path)
    runs_dir = tmp_path / "runs"
    args = ["sweep", a, b, *_overrides(tmp_path, tiny_model_dir), "--seeds", "2", "--runs-dir", str(runs_dir)]
    assert cli.main(args) == 0
    sweep_dir = runs_dir / "a-vs-b"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{sweep_dir}/sweep.json"
    assert not scripted  # every scripted evaluation was used: 4 runs x (round 0 + round 1)
    result = json.loads((sweep_dir / "sweep.json").read_text())
    section_seeds = set()
    for (recipe, seed), values in SCRIPT.items():
        run = sweep_dir / f"{recipe}-s{seed}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert _get(config, "seed") == seed
        section_seeds.add((recipe, tuple(_get(config, k) for k in SEEDED)))
        assert next(r for r in result["runs"] if r["path"] == str(run))["values"] == list(values)
    assert len(section_seeds) == 4  # each seed moves each section's seed
    for recipe in ("a", "b"):
        rows = [r for r in result["rows"] if r["recipe"] == recipe]
        expected, minutes = _by_hand(sweep_dir, recipe)
        assert [r["round"] for r in rows] == [0, 1]
        for row, want in zip(rows, expected):
            for key, value in want.items():
                assert row[key] == pytest.approx(value, abs=1e-9) if value is not None else row[key] is None, key
        assert result["minutes"][recipe] == pytest.approx(minutes)
    assert [r["kept"] for r in result["rows"] if r["round"] == 1] == [1, 2]  # a-s1 regressed: rolled back
    a0 = next(r for r in result["rows"] if r["recipe"] == "a" and r["round"] == 0)
    assert (a0["mean"], round(a0["low"], 3), round(a0["high"], 3)) == (pytest.approx(0.4), -0.871, 1.671)
    md = (sweep_dir / "sweep.md").read_text()
    assert "| a | 0 | 2 | mean_score 0.400 [-0.871, 1.671] | - | base |" in md
    assert "|  | 1 | 2 | mean_score 0.800 [-0.471, 2.071] | +0.300 [+0.300, +0.300] | 2/2 |  |" in md
    assert "| b | 0 | 2 | mean_score 0.500 [-0.771, 1.771] | - | base |" in md

    # run again: every run is finished, none runs
    calls = []
    real_loop = run_module.run_loop
    monkeypatch.setattr(run_module, "run_loop", lambda cfg, **kw: (calls.append(cfg.name), real_loop(cfg, **kw))[1])
    assert cli.main(args) == 0
    assert calls == [] and json.loads((sweep_dir / "sweep.json").read_text())["rows"] == result["rows"]
    # a run killed after its last round's partial summary, before the loop's end: only it is resumed
    partial = sweep_dir / "b-s0" / "summary.json"
    summary = json.loads(partial.read_text())
    partial.write_text(json.dumps({k: summary[k] for k in ("rounds", "best_model", "metric")}))
    assert cli.main(args) == 0
    assert calls == ["b-s0"] and json.loads(partial.read_text()) == summary
    # a finished run is not counted for a sweep of another config
    with pytest.raises(ConfigError, match=r"a-s0 finished with another config \(.*train.lr: 0.001 -> 0.01"):
        run_sweep([a, b], [0, 1], _overrides(tmp_path, tiny_model_dir) + ["train.lr=0.01"], runs_dir=str(runs_dir))


def test_t_interval_by_hand():
    mean, low, high = t_interval([0.2, 0.4, 0.6])
    half = 4.303 * 0.2 / math.sqrt(3)  # sd 0.2, t(0.975, 2) = 4.303
    assert (mean, low, high) == (pytest.approx(0.4), pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert t_interval([0.7]) == (0.7, None, None) and t_interval([]) == (None, None, None)
    assert t_quantile_975(30) == 2.042 and t_quantile_975(31) == pytest.approx(2.040, abs=1e-3)
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=1e-3)


def test_seeds_and_plan(tmp_path):
    assert parse_seeds(None, None) == [0, 1, 2] and parse_seeds(2, None) == [0, 1]
    assert parse_seeds(None, "0,5, 7") == [0, 5, 7]
    for seeds, seed_list, message in ((2, "1", "not both"), (0, None, ">= 1"), (None, "1,x", "integers"),
                                      (None, "3,3", "distinct")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(seeds, seed_list)
    a, b = _recipes(tmp_path)
    sweep_dir, runs = plan([a, "arithmetic-dpo"], [4, 9], ["rounds=2"], runs_dir=str(tmp_path), name="x")
    assert sweep_dir == tmp_path / "x"
    assert [(r.recipe, r.seed, r.cfg.name, r.cfg.rounds) for r in runs] == [
        ("a", 4, "a-s4", 2), ("a", 9, "a-s9", 2), ("arithmetic-dpo", 4, "arithmetic-dpo-s4", 2),
        ("arithmetic-dpo", 9, "arithmetic-dpo-s9", 2)]
    configs = [yaml.safe_load(yaml.safe_dump(to_dict(r.cfg))) for r in runs]
    assert [_get(c, "seed") for c in configs] == [r.seed for r in runs]
    for key in SEEDED:  # every section's seed moves with the run's seed
        assert _get(configs[0], key) != _get(configs[1], key) and _get(configs[2], key) != _get(configs[3], key)
    assert all(r.cfg.run_dir().parent == sweep_dir for r in runs)
    assert plan(["arithmetic-dpo"], [0])[0].name == "arithmetic-dpo-sweep"
    with pytest.raises(ConfigError, match="share the name 'a'"):
        plan([a, a], [0])
    with pytest.raises(ConfigError, match="override 'train.seed=3': the sweep sets"):
        plan([a], [0], ["train.seed=3"])
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({"name": "fixed", "generate": {"seed": 1}}))
    with pytest.raises(ConfigError, match="fixed.yaml sets generate.seed itself"):
        plan([str(fixed)], [0, 1])


def test_cli_bad_sweep_input_exits_2(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "nope.yaml"), "--seeds", "1"]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
    assert cli.main(["sweep", "arithmetic-dpo", "--seeds", "2", "--seed-list", "1"]) == 2
    assert "not both" in capsys.readouterr().err
