"""B-STaR's automatic sampling temperature per round (``generate.temperature_grid``) on the tiny model.

With a judge that calls every sample correct, a temperature's balance score (B-STaR eq. 3,
n* = 8) is min(n'/8, 1) with n' the distinct samples of a prompt: t = 1e-4 is greedy in effect
(k copies of one answer, 1/8), while t = 1 gives distinct random answers, so it must win.
"""

import json

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.judge import JUDGES
from ratchet.judge.base import Judgment
from ratchet.loop import stages
from ratchet.loop.manifest import StaleStageError
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides as _overrides


class AllCorrectJudge:
    def judge(self, prompt, completions):
        return [Judgment(score=1.0 + len(c) % 2, correct=True) for c in completions]


@pytest.fixture
def all_correct(monkeypatch):
    monkeypatch.setitem(JUDGES, "all_correct", AllCorrectJudge)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_each_round_samples_at_the_probed_temperature(tmp_path, tiny_model_dir, all_correct, monkeypatch):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=temp", "judge.name=all_correct", "generate.temperature=0.5",
                                                "generate.temperature_grid=[1.0, 0.0001]",
                                                "generate.temperature_probe_prompts=2"]
    run_loop(load_config(None, o), progress=False)
    r1 = tmp_path / "runs" / "temp" / "round_1"
    probe = r1 / "temperature"
    assert len(_lines(probe / "probe_prompts.jsonl")) == 2
    assert _lines(probe / "probe_prompts.jsonl") == _lines(r1 / "prompts.jsonl")[:2]
    for t in ("0.0001", "1.0"):
        rows = _lines(probe / f"completions_t{t}.jsonl")
        assert len(rows) == 2 and all(r["sampling"]["temperature"] == float(t) and len(r["completions"]) == 3
                                      for r in rows)
    chosen = json.loads((probe / "temperature.json").read_text())
    assert chosen["balance_scores"]["0.0001"] == pytest.approx(1 / 8)  # 3 copies of one answer
    assert chosen["balance_scores"]["1.0"] > 1 / 8
    assert chosen["temperature"] == 1.0 and chosen["probe_prompts"] == 2
    # the round itself was sampled at the choice, not at generate.temperature
    assert all(r["sampling"]["temperature"] == 1.0 for r in _lines(r1 / "completions.jsonl"))
    metrics = json.loads((r1 / "metrics.json").read_text())
    assert metrics["temperature"] == 1.0 and metrics["temperature_balance"] == chosen["balance_scores"]
    assert "temperature" in json.loads((r1 / "manifest.json").read_text())["stages"]

    # resume: the probe is a finished stage, skipped; a changed grid is reported, not mixed
    monkeypatch.setattr(stages, "probe_temperature", lambda *a, **k: pytest.fail("probe ran again"))
    run_loop(load_config(None, o), progress=False)
    with pytest.raises(StaleStageError, match=r"round_1/temperature .*temperature_grid"):
        run_loop(load_config(None, o + ["generate.temperature_grid=[0.5]"]), progress=False)


@pytest.mark.slow
def test_ties_go_to_the_lowest_temperature_and_no_grid_means_no_probe(tmp_path, tiny_model_dir, all_correct,
                                                                     monkeypatch):
    monkeypatch.setitem(JUDGES, "all_wrong", lambda: type("W", (), {"judge": lambda self, p, cs: [
        Judgment(score=0.0, correct=False) for _ in cs]})())
    o = _overrides(tmp_path, tiny_model_dir) + ["generate.temperature_probe_prompts=1"]
    run_loop(load_config(None, o + ["name=tie", "judge.name=all_wrong", "generate.temperature_grid=[1.0, 0.5]"]),
             progress=False)
    chosen = json.loads((tmp_path / "runs" / "tie" / "round_1" / "temperature" / "temperature.json").read_text())
    assert chosen["balance_scores"] == {"1.0": 0.0, "0.5": 0.0} and chosen["temperature"] == 0.5
    run_loop(load_config(None, o + ["name=plain", "judge.name=all_correct"]), progress=False)
    r1 = tmp_path / "runs" / "plain" / "round_1"
    assert not (r1 / "temperature").exists()
    metrics = json.loads((r1 / "metrics.json").read_text())
    assert metrics["temperature"] == 1.0 and "temperature_balance" not in metrics  # _overrides' temperature


@pytest.mark.parametrize("override, message", [("generate.temperature_grid=[0.7, 0]", "temperatures > 0"),
                                               ("generate.temperature_probe_prompts=0", "expected >= 1")])
def test_bad_grid_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
