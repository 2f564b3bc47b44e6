"""The loop on the tiny model: 2 rounds, manifests, the gate's rollback, resume, stale-stage detection."""

import json

import pytest

from ratchet import cli
from ratchet.config import load_config
from ratchet.loop import model_cache
from ratchet.loop import stages
from ratchet.loop.manifest import StaleStageError
from ratchet.loop.run import run_loop

from conftest import tiny_run_overrides as _overrides


@pytest.mark.slow
def test_two_rounds_with_rollback(tmp_path, tiny_model_dir, length_judge, scripted_accuracy, capsys):
    scripted_accuracy += [0.5, 0.3, 0.6]  # base, round 1 regresses, round 2 improves
    assert cli.main(["loop", *_overrides(tmp_path, tiny_model_dir), "rounds=2", "name=two"]) == 0
    run = tmp_path / "runs" / "two"
    summary = json.loads((run / "summary.json").read_text())
    assert [r["kept"] for r in summary["rounds"]] == [True, False, True]
    assert "rollback" in summary["rounds"][1]
    # round 2 started again from the initial model, not from round 1's rejected one
    gen2 = json.loads((run / "round_2" / "manifest.json").read_text())["stages"]["generate"]
    assert gen2["config"]["model"]["path"] == str(tiny_model_dir)
    assert summary["best_model"] == str(run / "round_2" / "train" / "model")
    for r in (1, 2):
        stages_done = json.loads((run / f"round_{r}" / "manifest.json").read_text())["stages"]
        assert set(stages_done) == {"prompts", "generate", "judge", "pair", "train", "evaluate"}
        assert all(len(h) == 64 for h in stages_done["pair"]["outputs"].values())
        metrics = json.loads((run / f"round_{r}" / "metrics.json").read_text())
        assert {"pass_at_1", "pass_at_k", "balance_score", "pairs_kept"} <= set(metrics)
    assert (run / "report.html").exists() and list((run / "plots").glob("*.png"))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("loop: rounds=2 mean_score 0.500 -> 0.600 kept=1 minutes=")


@pytest.mark.slow
def test_resume_skips_finished_stages_and_detects_changes(tmp_path, tiny_model_dir, length_judge, monkeypatch):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=resume"]
    run_loop(load_config(None, o), progress=False)
    run = tmp_path / "runs" / "resume" / "round_1"
    # a kill between pair and train: train's outputs and manifest entry are gone
    manifest = json.loads((run / "manifest.json").read_text())
    for stage in ("train", "evaluate"):
        del manifest["stages"][stage]
    (run / "manifest.json").write_text(json.dumps(manifest))
    calls = []
    real_generate = stages.generate

    def generate(model, tok, prompts, out, *a, **k):
        calls.append(f"generate {out.name}")
        return real_generate(model, tok, prompts, out, *a, **k)

    monkeypatch.setattr(stages, "generate", generate)
    real_train = stages.train_model
    monkeypatch.setattr(stages, "train_model", lambda *a, **k: (calls.append("train"), real_train(*a, **k))[1])
    run_loop(load_config(None, o), progress=False)
    assert calls == ["train", "generate answers.jsonl"]  # sampling was not redone; eval of the new model was
    # a changed recipe that invalidates a finished stage is reported, not mixed
    with pytest.raises(StaleStageError, match=r"generate.*k: 3 -> 2"):
        run_loop(load_config(None, o + ["generate.k=2"]), progress=False)


@pytest.mark.slow
def test_report_command(tmp_path, tiny_model_dir, length_judge, capsys):
    o = _overrides(tmp_path, tiny_model_dir) + ["name=rep"]
    run_loop(load_config(None, o), progress=False)
    (tmp_path / "runs" / "rep" / "report.html").unlink()
    assert cli.main(["report", str(tmp_path / "runs" / "rep")]) == 0
    assert (tmp_path / "runs" / "rep" / "report.html").exists()


def test_model_id_changes_with_weights(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w").write_text("a")
    first = model_cache.model_id(str(tmp_path / "m"))
    (tmp_path / "m" / "w").write_text("ab")
    assert model_cache.model_id(str(tmp_path / "m")) != first
