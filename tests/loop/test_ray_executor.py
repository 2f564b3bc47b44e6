"""``executor: ray`` (``ratchet.loop.executor``): the data-parallel stages split over Ray actors write
the files a local run writes, byte for byte; a worker killed mid-stage is restarted and the stage's
output does not change; an unreachable cluster fails at once with one line; bad settings fail when
the recipe loads; (``RATCHET_TEST_RAY_TRAIN=1``) training on 2 Ray Train workers matches one process.

One local Ray cluster (2 CPUs) for the module, started here by the tests that need it; workers run
one torch thread, as this process does under ``make test`` (OMP_NUM_THREADS=1), so every float sum
is the same. The tests on the cluster are slow (about a minute together on 2 busy cores)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from ratchet.config import ConfigError, ExecutorConfig, GenerateConfig, load_config
from ratchet.data.records import read_jsonl, write_jsonl
from ratchet.loop import stages
from ratchet.loop.executor import split, using
from ratchet.loop.run import repeat_hashes, run_loop

from conftest import STAND_INS, tiny_run_overrides

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parents[1]


def length_score(row, completions):
    """A judge for the tiny random model (never right): longer is better, a score with no verdict.
    Imported by the Ray workers as ``python:loop.test_ray_executor:length_score``."""
    return [float(len(c)) + 0.5 for c in completions]


JUDGE = "judge.name=python:loop.test_ray_executor:length_score"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU local Ray cluster whose workers import this file's judge (tests/ on their PYTHONPATH)
    and, when asked for it, the vLLM stand-in (``tests/stand_ins``), which logs to the path yielded.
    Its 2 GPUs are logical (Ray hands them to actors that ask; nothing here uses a real one)."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "RATCHET_STAND_IN_VLLM_LOG")}
    log = tmp_path_factory.mktemp("vllm") / "log.jsonl"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(STAND_INS)] + [saved["PYTHONPATH"]] * bool(
        saved["PYTHONPATH"]))
    os.environ["RATCHET_STAND_IN_VLLM_LOG"] = str(log)
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    yield log
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def executor(cluster):
    """Two actors on the cluster, shared by the tests that call stages directly (a process start each)."""
    with using(ExecutorConfig(name="ray", workers=2), {}) as executor:
        yield executor


def test_split_covers_the_rows_in_order():
    assert split(5, 2) == [(0, 2), (2, 5)]
    assert split(1, 4) == [(0, 1)]
    assert [i for lo, hi in split(17, 3) for i in range(lo, hi)] == list(range(17))


@pytest.mark.parametrize("override, message", [
    ("executor.name=spark", "executor.name: expected one of local, ray, got 'spark'"),
    ("executor.address=head", "executor.address: expected auto, local or HOST:PORT (a Ray head), got 'head'"),
    ("executor.address=head:99999", "executor.address: expected auto, local or HOST:PORT"),
    ("executor.workers=0", "executor.workers: expected >= 1, got 0"),
    ("executor.train_workers=-1", "executor.train_workers: expected >= 0, got -1"),
    ("executor.gpus=1", "executor.gpus: unknown key; expected one of name, address, workers"),
    ("executor.train_config=recipes/accelerate/fsdp.yaml", "executor.train_config: it configures the Ray Train "
                                                           "workers; set executor.train_workers too"),
    ("executor.train_config=nope.yaml executor.train_workers=2", "executor.train_config: no such file: nope.yaml"),
    ("evaluate.sampler=hf", "evaluate.sampler: executor.name: ray shards sampling with the cached sampler or vllm "
                            "(one engine per GPU actor), got 'hf'"),
    ("generate.sampler=vllm", "generate.sampler: vllm on Ray runs one engine per actor on the actor's GPUs: set "
                              "executor.gpus_per_worker (> 0, and at least generate.vllm.tensor_parallel_size 1), "
                              "got 0"),
    ("evaluate.sampler=vllm executor.gpus_per_worker=1 generate.vllm.tensor_parallel_size=2",
     "evaluate.sampler: vllm on Ray runs one engine per actor on the actor's GPUs: set executor.gpus_per_worker "
     "(> 0, and at least generate.vllm.tensor_parallel_size 2), got 1")])
def test_bad_executor_settings_fail_when_the_recipe_loads(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, ["executor.name=ray", *override.split()])
    assert load_config(None, []).executor == ExecutorConfig(name="local")  # the default: as before Ray


def _the_round_here_and_on_ray(tmp_path, model_dir, monkeypatch, overrides: list[str], on_ray: list[str]) -> dict:
    """One round run locally and with ``executor.name=ray`` plus ``on_ray``, from two working
    directories with the same relative run directory (so paths written into files are equal); asserts
    every file but config.yaml is byte-identical and returns the files' hashes."""
    monkeypatch.syspath_prepend(str(TESTS))
    base = [o for o in tiny_run_overrides(tmp_path, model_dir) if not o.startswith(("judge.", "name=", "runs_dir="))]
    base += [JUDGE, "runs_dir=runs", "name=r", "seed=5", "gate_tolerance=100", "task.train_prompts=7",
             "task.heldout_prompts=5", *overrides]
    runs = {}
    for name, executor in (("local", []), ("ray", ["executor.name=ray", *on_ray])):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        run_loop(load_config(None, base + executor), progress=False)
        runs[name] = {k: v for k, v in repeat_hashes(tmp_path / name / "runs" / "r").items() if k != "config.yaml"}
    local, ray_run = runs["local"], runs["ray"]
    assert local == ray_run, sorted(k for k in set(local) | set(ray_run) if local.get(k) != ray_run.get(k))
    return local


@pytest.mark.slow
def test_a_round_on_ray_writes_the_local_round_byte_for_byte(cluster, tmp_path, tiny_model_dir, monkeypatch):
    local = _the_round_here_and_on_ray(tmp_path, tiny_model_dir, monkeypatch, ["generate.batch_size=4"], [])
    assert {"round_1/completions.jsonl", "round_1/judgments.jsonl", "round_1/pairs.jsonl",
            "round_1/eval/answers.jsonl", "round_1/eval/judgments.jsonl", "round_1/eval/metrics.json",
            "round_0/eval/answers.jsonl", "summary.json"} <= set(local)
    assert len(read_jsonl(tmp_path / "ray" / "runs" / "r" / "round_1" / "pairs.jsonl")) > 0  # the round trained


@pytest.mark.slow
def test_vllm_engines_on_gpu_actors_write_the_local_round(cluster, tmp_path, tiny_model_dir, monkeypatch,
                                                           stand_in_vllm):
    """``sampler: vllm`` under ray: one engine per actor, built with the recipe's ``generate.vllm``
    options, sampling its shard with the stage's seeds, shut down when its stage ends. vLLM is the
    stand-in here (its samples follow each request's seed; no GPU on this machine), so the files
    equal the local run's only if every shard seeds its prompts by their place in the stage.
    (Before the tests that share ``executor``: its actors would hold the cluster's 2 CPUs.)"""
    import json

    monkeypatch.setenv("RATCHET_STAND_IN_VLLM_LOG", str(cluster))  # the log the workers write to
    local = _the_round_here_and_on_ray(tmp_path, tiny_model_dir, monkeypatch, [
        "generate.sampler=vllm", "evaluate.sampler=vllm", "generate.vllm.gpu_memory_utilization=0.4"],
        ["executor.gpus_per_worker=1"])
    assert {"round_1/completions.jsonl", "round_1/eval/answers.jsonl", "round_0/eval/answers.jsonl"} <= set(local)
    events = [json.loads(line) for line in cluster.read_text().splitlines()]
    actors = [e for e in events if e["pid"] != os.getpid()]
    engines = [e for e in actors if e["event"] == "engine"]
    # 2 actors x 3 sampling stages (round 0's evaluation, round 1's generation and evaluation)
    assert len({e["pid"] for e in engines}) == 2 and len(engines) == 6
    assert all(e["kwargs"] == {"gpu_memory_utilization": 0.4} for e in engines)
    assert sum(e["event"] == "close" for e in actors) == 6  # each stage's engines shut down after it
    driver_seeds = sorted(s for e in events if e["pid"] == os.getpid() and e["event"] == "generate" for s in e["seeds"])
    assert sorted(s for e in actors if e["event"] == "generate" for s in e["seeds"]) == driver_seeds


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RATCHET_TEST_RAY_TRAIN"),
                    reason="about a minute here (Ray Train's start); RATCHET_TEST_RAY_TRAIN=1 runs it")
def test_training_on_two_ray_train_workers_matches_one_process(cluster, tmp_path, tiny_model_dir, monkeypatch):
    """DDP over gloo on 2 Ray Train workers, 1 pair each per step, against one process with 2 pairs
    per step: the same global batch, so the same update up to float summation order. (Before the
    tests that share ``executor``: its actors would hold the cluster's 2 CPUs.)"""
    import json

    from safetensors.torch import load_file

    monkeypatch.syspath_prepend(str(TESTS))
    overrides = [o for o in tiny_run_overrides(tmp_path, tiny_model_dir) if not o.startswith(("judge.", "name="))]
    overrides += [JUDGE, "seed=5", "gate_tolerance=100", "task.train_prompts=8"]
    run_loop(load_config(None, overrides + ["name=one", "train.batch_size=2"]), progress=False)
    run_loop(load_config(None, overrides + ["name=two", "train.batch_size=1", "executor.name=ray",
                                            "executor.train_workers=2"]), progress=False)
    one, two = (load_file(tmp_path / "runs" / n / "round_1" / "train" / "model" / "model.safetensors")
                for n in ("one", "two"))
    start = load_file(tiny_model_dir / "model.safetensors")
    assert max(float((one[k] - start[k]).abs().max()) for k in one) > 1e-4  # it trained
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5
    summaries = [json.loads((tmp_path / "runs" / n / "round_1" / "train" / "train_summary.json").read_text())
                 for n in ("one", "two")]
    assert summaries[0]["global_batch"] == summaries[1]["global_batch"] == 2
    assert (summaries[0]["processes"], summaries[0]["distributed"]) == (1, "NO")
    assert (summaries[1]["processes"], summaries[1]["distributed"], summaries[1]["mixed_precision"]) == \
        (2, "MULTI_CPU", "no")
    # executor.train_config: an accelerate config's strategy reaches the workers (here bf16 autocast;
    # FSDP and DeepSpeed, the reason the key exists, are set up by accelerate on GPUs only)
    config = tmp_path / "bf16.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nmixed_precision: bf16\n"
                      "num_machines: 1\nnum_processes: 2\nuse_cpu: true\n")
    run_loop(load_config(None, overrides + ["name=bf16", "train.batch_size=1", "executor.name=ray",
                                            "executor.train_workers=2", f"executor.train_config={config}"]),
             progress=False)
    bf16 = json.loads((tmp_path / "runs" / "bf16" / "round_1" / "train" / "train_summary.json").read_text())
    assert (bf16["processes"], bf16["distributed"], bf16["mixed_precision"]) == (2, "MULTI_CPU", "bf16")


@pytest.mark.slow
def test_judging_in_ray_tasks_equals_judging_here(cluster, tmp_path, monkeypatch):
    """With free CPUs (no actors yet) rows are judged by Ray tasks, a judge each; merged in row order.
    (Before the tests that share ``executor``: its actors would hold the cluster's 2 CPUs.)"""
    from ratchet.config import JudgeConfig

    monkeypatch.syspath_prepend(str(TESTS))
    rows = [{"id": f"p{i}", "completions": [{"text": "x" * (i * j % 7)} for j in range(3)]} for i in range(5)]
    completions = write_jsonl(tmp_path / "completions.jsonl", rows)
    judge = JudgeConfig(name=JUDGE.partition("=")[2])
    stages.judge(completions, tmp_path / "local.jsonl", judge)
    with using(ExecutorConfig(name="ray", workers=2), {}) as executor:
        stages.judge(completions, tmp_path / "ray.jsonl", judge)
        assert not executor.actors  # tasks, not actors, judged
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


@pytest.mark.slow
def test_self_scores_on_ray_equal_the_local_ones(executor, tmp_path, tiny_model_dir, tiny):
    """Log-probs are floats: equal only if every batch is the local batch (same rows, same padding)."""
    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": "count " * (i % 4 + 1)}],
             "completions": [{"text": "one two " * (j + i % 3), "finish_reason": "eos" if j % 2 else "length"}
                             for j in range(3)]} for i in range(7)]
    completions = write_jsonl(tmp_path / "completions.jsonl", rows)  # holds one empty completion per 3 prompts
    stages.self_score(*tiny, completions, tmp_path / "local.jsonl", batch_size=4)
    stages.self_score(*executor.model(None, str(tiny_model_dir)), completions, tmp_path / "ray.jsonl", batch_size=4)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


@pytest.mark.slow
def test_a_worker_killed_during_generation_is_restarted_and_the_output_is_unchanged(executor, tmp_path,
                                                                                  tiny_model_dir, tiny):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": f"p{i}", "messages": [{"role": "user", "content": f"say {i} " * (i % 5 + 1)}]} for i in range(32)])
    # one prompt's 4 samples per decode step: ~1000 steps per worker, so the kill lands mid-stage
    cfg = GenerateConfig(k=4, max_new_tokens=64, temperature=1.0, batch_size=4, seed=3)
    stages.generate(*tiny, prompts, tmp_path / "local.jsonl", cfg, progress=False)
    replicas, _ = executor.model(None, str(tiny_model_dir))
    actors = executor.replicas()
    before = ray.get([a.pid.remote() for a in actors])
    failed = []
    stage = threading.Thread(target=lambda: _catching(failed, stages.generate, replicas, None, prompts,
                                                      tmp_path / "ray.jsonl", cfg, progress=False))
    stage.start()
    time.sleep(0.3)  # the shards are being sampled
    alive = stage.is_alive()
    os.kill(before[0], signal.SIGKILL)
    stage.join(timeout=120)
    after = ray.get([a.pid.remote() for a in actors])
    assert alive, "the stage ended before the worker was killed; make it longer"
    assert not failed, failed
    assert after[0] != before[0] and after[1] == before[1]  # the killed actor was restarted, the other kept
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def _catching(failed: list, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # a thread's exception would otherwise be lost
        failed.append(e)


def test_an_unreachable_cluster_fails_at_once_with_one_line(tmp_path, monkeypatch, capsys):
    from ratchet.cli import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process, whatever ran before
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # main() leaves threads alone
    start = time.time()
    code = main(["loop", "arithmetic-dpo", "executor.name=ray", "executor.address=127.0.0.1:9",
                 f"runs_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and time.time() - start < 10, err
    assert err.startswith("ratchet: config error: executor.address: no Ray head answers at 127.0.0.1:9 ("), err
    assert err.count("\n") == 1 and not (tmp_path / "demo").exists()  # one line, before the run directory

