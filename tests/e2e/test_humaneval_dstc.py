"""DSTC on HumanEval: the task's split, self-written tests, the pass matrix -> judgments -> pairs
path on hand-made code, and whole loop rounds of recipes/humaneval-dstc.yaml on the tiny model."""

import json
from pathlib import Path

import pytest

from ratchet import cli, config
from ratchet.config import GenerateConfig, JudgeConfig, PairConfig, load_config
from ratchet.data.records import read_jsonl, write_jsonl
from ratchet.data.self_tests import load_template, writing_messages
from ratchet.generate.base import Sample
from ratchet.judge.code import STOP, human_eval_problems, load_human_eval
from ratchet.loop import stages
from ratchet.tasks import builtin_task

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "humaneval-dstc.yaml"


@pytest.fixture(scope="module")
def code_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny random Llama with room for HumanEval prompts in byte tokens (up to ~1,700)."""
    from conftest import make_model

    path = tmp_path_factory.mktemp("tiny-code-llama")
    make_model(len(tiny_tokenizer), max_positions=4096).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_recipe_loads_as_dstc():
    cfg = load_config(RECIPE)
    assert (cfg.task.name, cfg.judge.name, cfg.pair.strategy, cfg.evaluate.judge) == (
        "humaneval", "dstc", "dstc", "unit_tests")
    assert cfg.generate.tests > 0 and cfg.generate.k > 1


def test_humaneval_split_is_disjoint_and_fixed():
    heldout = human_eval_problems(82, split="heldout", seed=0)
    train = human_eval_problems(82, split="train", seed=0)
    assert not {r["id"] for r in heldout} & {r["id"] for r in train}
    assert len({r["id"] for r in heldout + train}) == 164
    # the held-out set is a prefix, whatever the seed; training draws depend on the seed
    assert human_eval_problems(5, split="heldout", seed=7) == heldout[:5]
    assert human_eval_problems(5, split="train", seed=1) != human_eval_problems(5, split="train", seed=2)
    row = heldout[0]
    assert row["task"] == "humaneval" and builtin_task("humaneval").stop == STOP
    assert row["code"]["entry_point"] in row["code"]["prompt"] and "def check" in row["code"]["test"]
    with pytest.raises(ValueError, match="task.train_prompts=83, but its split has 82"):
        human_eval_problems(83, split="train")


def test_writing_messages_fill_the_template(tmp_path):
    row = human_eval_problems(1, split="heldout")[0]
    [message] = writing_messages(row, load_template())
    assert row["code"]["prompt"] in message["content"] and f"assert {row['code']['entry_point']}(" in message["content"]
    with pytest.raises(KeyError, match="writing tests needs row\\['code'\\]"):
        writing_messages({"id": "a", "messages": []}, load_template())
    bad = tmp_path / "t.txt"
    bad.write_text("Tests for $prompt please")
    with pytest.raises(ValueError, match="needs exactly \\$prompt and \\$entry_point"):
        load_template(bad)


INC = {"prompt": 'def inc(x):\n    """x plus one."""\n', "entry_point": "inc",
       "test": "def check(candidate):\n    assert candidate(5) == 6\n"}
RIGHT_A = "```python\ndef inc(x):\n    return x + 1\n```"
RIGHT_B = "    return 1 + x\n"  # a body-only continuation of the prompt
WRONG = "    return x * 2\n"  # right for x = 1 only


@pytest.mark.slow
def test_pass_matrix_to_judgments_to_pairs(tmp_path):
    """Two right samples and one wrong; tests: t0 = inc(1) == 2 (all pass: not lenient),
    t1 = inc(0) == 1 (the wrong one fails). Minimax: chosen = code 0 with the strictest test it
    passes, t1 (2 passes < 3); rejected test = the most lenient one some code fails, t1; rejected
    code = the one failing it."""
    row = {"id": "inc", "task": "humaneval", "messages": [{"role": "user", "content": "write inc"}], "code": INC,
           "completions": [{"text": t, "num_tokens": 5, "finish_reason": "stop"} for t in (RIGHT_A, RIGHT_B, WRONG)],
           "tests": ["assert inc(1) == 2", "assert inc(0) == 1"]}
    c = write_jsonl(tmp_path / "completions.jsonl", [row])
    [judged] = read_jsonl(stages.judge(c, tmp_path / "judgments.jsonl", JudgeConfig(name="dstc")))
    assert [d["passed"] for d in judged["details"]] == [[True, True], [True, True], [True, False]]
    assert judged["scores"] == [1.0, 1.0, 0.5]
    assert judged["correct"] == [True, True, False]  # the real tests, for monitoring only
    [pair] = read_jsonl(stages.pair(c, tmp_path / "judgments.jsonl", tmp_path / "pairs.jsonl",
                                    PairConfig(strategy="dstc", max_pairs_per_prompt=1)))
    assert pair["chosen"] == RIGHT_A + "\n\nassert inc(0) == 1"
    assert pair["rejected"] == WRONG + "\n\nassert inc(0) == 1"
    assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.5)
    # a code task without real tests: the same pass matrix, correctness unknown
    c = write_jsonl(tmp_path / "no_real_tests.jsonl", [{**row, "code": {**INC, "test": ""}}])
    [judged] = read_jsonl(stages.judge(c, tmp_path / "j2.jsonl", JudgeConfig(name="dstc")))
    assert judged["scores"] == [1.0, 1.0, 0.5] and judged["correct"] == [None, None, None]


def test_dstc_judge_needs_tests(tmp_path):
    row = {"id": "inc", "messages": [], "code": INC, "completions": [{"text": RIGHT_A}]}
    c = write_jsonl(tmp_path / "completions.jsonl", [row])
    with pytest.raises(KeyError, match="needs row\\['tests'\\].*generate.tests > 0"):
        stages.judge(c, tmp_path / "j.jsonl", JudgeConfig(name="dstc"))


class ScriptedSampler:
    """Plays a model that solves HumanEval: code prompts get the canonical solution twice and a
    wrong body; test-writing prompts get the task's real asserts, after a copy of a wrong
    solution (which parsing must drop) and with a duplicate."""

    def __init__(self, model, tokenizer, *, batch_size, progress):
        self.tasks = load_human_eval()

    def _task(self, messages):
        return next(t for t in self.tasks if t.prompt in messages[-1]["content"])

    def sample(self, prompts, params):
        out = []
        for messages in prompts:
            task = self._task(messages)
            if "test cases" in messages[-1]["content"]:
                text = (f"```python\ndef {task.entry_point}(*args):\n    return None\n\n{task.test}\n"
                        f"check({task.entry_point})\n```")
                texts = [text] * params.k
            else:
                texts = [task.canonical_solution, task.canonical_solution + "\n", "    return None\n"]
            out.append([Sample(texts[i % len(texts)], 10, "stop") for i in range(params.k)])
        return out


def test_generate_stores_parsed_tests_beside_the_code(tmp_path, code_model_dir, monkeypatch):
    from ratchet.models import load_model

    monkeypatch.setitem(stages.SAMPLERS, "scripted", ScriptedSampler)
    monkeypatch.setattr(config, "SAMPLER_NAMES", (*config.SAMPLER_NAMES, "scripted"))
    p = write_jsonl(tmp_path / "prompts.jsonl", human_eval_problems(2, split="train"))
    cfg = GenerateConfig(sampler="scripted", k=3, tests=2, max_tests=3)
    rows = read_jsonl(stages.generate(*load_model(str(code_model_dir)), p, tmp_path / "completions.jsonl", cfg, progress=False))
    for row in rows:
        assert len(row["completions"]) == 3 and len(row["test_samples"]) == 2
        assert len(row["tests"]) == 3 and all("assert" in t and "return None" not in t for t in row["tests"])


def _overrides(tmp_path, model_dir, name):
    return [f"runs_dir={tmp_path / 'runs'}", f"name={name}", f"model={model_dir}", "task.train_prompts=2",
            "task.heldout_prompts=2", "generate.k=3", "generate.tests=2", "generate.max_new_tokens=8",
            "evaluate.max_new_tokens=8", "train.batch_size=2", "train.max_length=2048", "train.lr=1e-3"]


@pytest.mark.slow
def test_round_of_the_recipe_on_the_tiny_model(tmp_path, code_model_dir):
    """Random weights write no test that parses, so there is nothing to pair: the round is
    recorded as not trained, and the loop goes on from the same model."""
    assert cli.main(["loop", str(RECIPE), *_overrides(tmp_path, code_model_dir, "tiny")]) == 0
    run = tmp_path / "runs" / "tiny"
    r1 = run / "round_1"
    rows = read_jsonl(r1 / "completions.jsonl")
    assert len(rows) == 2 and all(len(r["completions"]) == 3 and len(r["test_samples"]) == 2 for r in rows)
    assert all(isinstance(r["tests"], list) for r in rows)
    judged = read_jsonl(r1 / "judgments.jsonl")
    assert all(len(j["scores"]) == 3 and all("passed" in d for d in j["details"]) for j in judged)
    assert read_jsonl(r1 / "pairs.jsonl") == []
    metrics = json.loads((r1 / "metrics.json").read_text())
    assert metrics["skipped_training"] == "no pairs" and metrics["pairs_kept"] == 0
    base = json.loads((run / "round_0" / "eval" / "metrics.json").read_text())
    assert base["n"] == 2 and base["accuracy"] == 0.0
    # held out: judged by the real tests (unit_tests), not by the training judge
    assert all("verdict" in j["details"][0] for j in read_jsonl(run / "round_0" / "eval" / "judgments.jsonl"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"][1]["kept"] is False and "not trained (no pairs)" in summary["rounds"][1]["rollback"]


@pytest.mark.slow
def test_round_with_pairs_trains_and_evaluates(tmp_path, code_model_dir, monkeypatch):
    """The scripted samples give a pass matrix with a winner: pairs of code + test, training on
    them, and the trained model's held-out pass@1 under the real tests."""
    monkeypatch.setitem(stages.SAMPLERS, "scripted", ScriptedSampler)
    monkeypatch.setattr(config, "SAMPLER_NAMES", (*config.SAMPLER_NAMES, "scripted"))
    o = _overrides(tmp_path, code_model_dir, "pairs") + ["generate.sampler=scripted"]
    assert cli.main(["loop", str(RECIPE), *o]) == 0
    r1 = tmp_path / "runs" / "pairs" / "round_1"
    pairs = read_jsonl(r1 / "pairs.jsonl")
    rows = {r["id"]: r for r in read_jsonl(r1 / "completions.jsonl")}
    assert len(pairs) == 2
    for p in pairs:  # each response is a code sample followed by one of the row's parsed tests
        row = rows[p["id"]]
        joined = {c["text"] + "\n\n" + t for c in row["completions"] for t in row["tests"]}
        assert p["chosen"] in joined and p["rejected"] in joined
        assert p["chosen"].startswith(row["completions"][0]["text"])  # canonical (ties: the first)
        assert p["rejected"].startswith("    return None\n\n") and p["chosen_score"] > p["rejected_score"]
    metrics = json.loads((r1 / "metrics.json").read_text())
    assert metrics["pairs_kept"] == 2 and metrics["pass_at_1"] == pytest.approx(2 / 3)
    assert metrics["judge_discrimination"] == 1.0  # the self-written tests rank a right sample first
    assert (r1 / "train" / "model" / "model.safetensors").exists()
    assert json.loads((r1 / "eval" / "metrics.json").read_text())["n"] == 2
