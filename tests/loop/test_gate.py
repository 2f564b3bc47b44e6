"""The gate: rules on fabricated per-problem answers, its config, and its record in a tiny loop's files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ratchet.config import (GATE_RULES, SEEDED_SECTIONS, ConfigError, GateConfig, RunConfig, field_docs, load_config,
                            save_config, section_seed)
from ratchet.loop.gate import Best, decide, heldout_outcomes

from conftest import tiny_run_overrides

# ten held-out problems; the best round so far solved p0..p2
IDS = [f"p{i}" for i in range(10)]
BEST = Best(round=1, value=0.3, outcomes={p: float(i < 3) for i, p in enumerate(IDS)})


def _solved(*indices):
    return {p: float(i in indices) for i, p in enumerate(IDS)}


def test_significant_gain_keeps_only_a_significant_gain():
    # p0..p2 still solved, p3..p7 newly solved: b = 5, c = 0, one-sided p = 0.5^5 = 0.03125
    new = _solved(0, 1, 2, 3, 4, 5, 6, 7)
    record = decide(GateConfig(rule="significant_gain"), "accuracy", 0.8, new, BEST)
    assert record["decision"] == "kept" and record["p_value"] == 0.03125 and record["discordant"] == [5, 0]
    assert record["delta"] == pytest.approx(0.5) and record["compared_with"] == 1
    assert record["test"] == "mcnemar_exact" and record["n_paired"] == 10
    # the same answers at 99% confidence (p must be <= 0.01), or needing a gain of 0.6: rolled back
    assert decide(GateConfig(rule="significant_gain", confidence=0.99), "accuracy", 0.8, new, BEST)["decision"] \
        == "rolled back"
    assert decide(GateConfig(rule="significant_gain", min_delta=0.6), "accuracy", 0.8, new, BEST)["decision"] \
        == "rolled back"


def test_a_gain_within_noise_is_kept_by_no_regression_only():
    # p3, p4, p5 newly solved, p0 lost: b = 3, c = 1, p = (C(4,3) + C(4,4)) / 2^4 = 5/16 = 0.3125
    new = _solved(1, 2, 3, 4, 5)
    strict = decide(GateConfig(rule="significant_gain"), "accuracy", 0.5, new, BEST)
    assert strict["decision"] == "rolled back" and strict["p_value"] == 0.3125
    assert "p = 0.3125" in strict["reason"] and "round 1" in strict["reason"]
    loose = decide(GateConfig(), "accuracy", 0.5, new, BEST)
    assert loose["decision"] == "kept" and loose["p_value"] == 0.3125 and loose["rule"] == "no_regression"


def test_no_regression_tolerance():
    worse = _solved(0, 1)  # b = 0, c = 1: one-sided p of a gain = P(B >= 0) = 1
    assert decide(GateConfig(), "accuracy", 0.2, worse, BEST)["decision"] == "rolled back"
    record = decide(GateConfig(tolerance=0.1), "accuracy", 0.2, worse, BEST)
    assert record["decision"] == "kept" and record["p_value"] == 1.0
    assert record["delta"] == pytest.approx(-0.1)


def test_scores_are_compared_by_the_paired_bootstrap():
    best = Best(0, 1.0, {p: 1.0 for p in IDS})
    better = {p: 1.5 for p in IDS}  # better on every problem: no resample has a mean difference <= 0
    record = decide(GateConfig(rule="significant_gain"), "mean_score", 1.5, better, best)
    assert record["test"] == "paired_bootstrap" and record["p_value"] == pytest.approx(1 / 10001)
    assert record["decision"] == "kept"
    mixed = {p: 1.5 if i % 2 else 0.6 for i, p in enumerate(IDS)}  # mean 1.05: up on half, down on half
    assert decide(GateConfig(rule="significant_gain"), "mean_score", 1.05, mixed, best)["decision"] == "rolled back"


def test_without_per_problem_answers():
    record = decide(GateConfig(rule="significant_gain"), "accuracy", 0.9, None, BEST)
    assert record["decision"] == "rolled back" and "no per-problem outcomes" in record["reason"]
    assert decide(GateConfig(), "accuracy", 0.9, None, BEST)["decision"] == "kept"  # the value alone decides
    assert decide(GateConfig(), "accuracy", None, None, BEST)["decision"] == "rolled back"


def test_heldout_outcomes_read_the_judgments(tmp_path):
    rows = [{"id": "a", "scores": [1.0], "correct": [True]}, {"id": "b", "scores": [0.0], "correct": [False]},
            {"id": "c", "scores": [0.0], "correct": [None]}]  # no verdict counts as wrong, as in the metric
    (tmp_path / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert heldout_outcomes(tmp_path, "accuracy") == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert heldout_outcomes(tmp_path, "mean_score") == {"a": 1.0, "b": 0.0, "c": 0.0}
    (tmp_path / "judgments.jsonl").write_text(json.dumps({"id": "a", "outcome": 0.5, "reference": "x"}) + "\n")
    assert heldout_outcomes(tmp_path, "win_rate") == {"a": 0.5}
    assert heldout_outcomes(tmp_path / "missing", "accuracy") is None


def test_gate_config_fields_are_documented_and_checked():
    assert set(field_docs(GateConfig)) == {f.name for f in dataclasses.fields(GateConfig)}
    assert {"seed", "gate", "gate_tolerance"} <= set(field_docs(RunConfig))
    assert GATE_RULES == ("no_regression", "significant_gain")
    for override, message in (("gate.rule=strict", "gate.rule: expected one of no_regression, significant_gain"),
                              ("gate.confidence=1", "gate.confidence: expected a probability in"),
                              ("gate.confidence=0", "gate.confidence"),
                              ("gate.min_delta=-0.1", "gate.min_delta: expected a finite number >= 0")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])


def test_gate_tolerance_is_the_no_regression_allowance(tmp_path):
    old = load_config(None, ["gate_tolerance=0.05"])
    assert old.gate.tolerance == 0.05 and old.gate.rule == "no_regression"
    new = load_config(None, ["gate.tolerance=0.05"])
    assert new.gate_tolerance == 0.05
    save_config(old, tmp_path / "config.yaml")  # a saved config (both names, one value) loads again
    assert load_config(tmp_path / "config.yaml").gate == old.gate
    with pytest.raises(ConfigError, match="gate_tolerance: 0.05 differs from gate.tolerance 0.1"):
        load_config(None, ["gate_tolerance=0.05", "gate.tolerance=0.1"])


def test_one_seed_derives_every_section_seed(tmp_path):
    cfg = load_config(None, ["seed=7"])
    seeds = {s: getattr(cfg, s).seed for s in SEEDED_SECTIONS}
    assert seeds == {s: section_seed(7, s) for s in SEEDED_SECTIONS}
    assert len(set(seeds.values())) == len(SEEDED_SECTIONS)  # unrelated streams, not one number
    other = load_config(None, ["seed=8"])
    assert all(getattr(other, s).seed != seeds[s] for s in SEEDED_SECTIONS)
    explicit = load_config(None, ["seed=7", "generate.seed=3"])  # a section seed set explicitly wins
    assert explicit.generate.seed == 3 and explicit.train.seed == seeds["train"]
    assert load_config(None, []).train.seed == 0 and load_config(None, []).seed is None  # as before
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.slow
def test_the_loop_records_the_gate_and_intervals(tmp_path, tiny_model_dir, length_judge, capsys):
    from ratchet import cli

    overrides = tiny_run_overrides(tmp_path, tiny_model_dir) + ["gate.rule=significant_gain", "gate.min_delta=0"]
    assert cli.main(["loop", *overrides]) == 0
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["gate"]["rule"] == "significant_gain" and isinstance(summary["threads"], int)
    assert "minutes" not in summary and json.loads((run / "timing.json").read_text())["minutes"] > 0
    base, r1 = summary["rounds"]
    for r in (base, r1):  # the length judge scores: mean_score with its bootstrap interval
        assert r["metric"] == "mean_score" and r["interval"][0] <= r["mean_score"] <= r["interval"][1]
    gate = r1["gate"]
    assert gate["compared_with"] == 0 and gate["test"] == "paired_bootstrap" and gate["n_paired"] == 3
    assert gate["delta"] == pytest.approx(r1["mean_score"] - base["mean_score"])
    assert r1["kept"] == (gate["decision"] == "kept") == (gate["delta"] >= 0 and gate["p_value"] <= 0.05 + 1e-12)
    assert json.loads((run / "round_1" / "metrics.json").read_text())["gate"] == gate
    out = capsys.readouterr().out
    assert f"{base['mean_score']:.3f} [{base['interval'][0]:.3f}, {base['interval'][1]:.3f}]" in out
    html = (run / "report.html").read_text()
    assert "<th>gate.p_value</th>" in html and "<th>interval</th>" in html
