"""Tasks from a user's data: every format, column mapping, the fixed split, the draw, and errors
that name the file and column before any model loads."""

from __future__ import annotations

import json

import pytest

from ratchet.config import ConfigError, load_config
from ratchet.loop import stages
from ratchet.tasks import FileTask, TaskError, builtin_task, load_task

ROWS = [{"question": f"What is item {i}?", "gold": f"thing {i}", "kind": "even" if i % 2 == 0 else "odd"}
        for i in range(50)]


def _jsonl(path, rows=ROWS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def jsonl(tmp_path):
    return _jsonl(tmp_path / "qa.jsonl")


def _task(source, **kw):
    return FileTask(str(source), fields={"prompt": "question", "answer": "gold"}, **kw)


def test_rows_are_chat_prompts_with_mapped_and_extra_fields(jsonl):
    task = _task(jsonl, heldout_fraction=0.2)
    row = task.heldout(1)[0]
    assert row["messages"] == [{"role": "user", "content": row["messages"][0]["content"]}]
    assert row["answer"].startswith("thing ") and row["kind"] in ("even", "odd") and row["task"] == "qa"
    assert "question" not in row and "gold" not in row  # mapped columns appear under ratchet's names only
    assert row["id"].startswith("row-")


def test_split_is_disjoint_fixed_by_content_and_near_the_fraction(jsonl, tmp_path):
    task = _task(jsonl, heldout_fraction=0.3)
    info = task.check()
    assert info["train_rows"] + info["heldout_rows"] == 50 and 8 <= info["heldout_rows"] <= 22
    held = {r["messages"][0]["content"] for r in task.heldout(100)}
    train = {r["messages"][0]["content"] for r in task.train(100, 1)}
    assert held.isdisjoint(train) and len(held | train) == 50
    # the same rows in another order and another file: the same split
    shuffled = _jsonl(tmp_path / "other.jsonl", list(reversed(ROWS)))
    assert {r["messages"][0]["content"] for r in _task(shuffled, heldout_fraction=0.3).heldout(100)} == held
    # another seed: another split
    assert {r["messages"][0]["content"] for r in _task(jsonl, heldout_fraction=0.3, seed=1).heldout(100)} != held


def test_rounds_draw_without_repeats_until_the_split_is_used_up(jsonl):
    task = _task(jsonl, heldout_fraction=0.2)
    n_train = task.check()["train_rows"]
    seen = [r["id"] for rnd in (1, 2, 3) for r in task.train(10, rnd)]
    assert len(seen) == 30 and len(set(seen)) == 30  # 3 rounds of 10 from the ~40 training rows
    all_rows = [r["id"] for rnd in range(1, 9) for r in task.train(10, rnd)]
    assert set(all_rows) == {r["id"] for r in task.train(n_train, 1)}  # every row drawn by then
    assert task.train(10, 2) == task.train(10, 2)  # deterministic


def test_messages_system_and_template(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    p = _jsonl(tmp_path / "m.jsonl", [{"messages": chat, "answer": "hello"}] + [
        {"messages": [{"role": "user", "content": f"q{i}"}], "answer": "x"} for i in range(9)])
    rows = FileTask(str(p), heldout_fraction=0.5).train(10, 1) + FileTask(str(p), heldout_fraction=0.5).heldout(10)
    assert chat in [r["messages"] for r in rows]
    q = _jsonl(tmp_path / "s.jsonl", [{"prompt": f"q{i}", "system": "Sys", "answer": "a"} for i in range(10)])
    assert FileTask(str(q), heldout_fraction=0.5).heldout(1)[0]["messages"][0] == {"role": "system", "content": "Sys"}
    t = FileTask(str(jsonl_of(tmp_path)), template="Name {kind} item {gold}.", heldout_fraction=0.5)
    assert t.heldout(1)[0]["messages"][0]["content"].startswith("Name ")


def jsonl_of(tmp_path):
    return _jsonl(tmp_path / "t.jsonl")


def test_csv_parquet_and_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(ROWS)
    data.to_parquet(str(tmp_path / "qa.parquet"))
    data.to_csv(str(tmp_path / "qa.csv"), index=False)
    datasets.DatasetDict({"train": data.select(range(40)), "test": data.select(range(40, 50))}).save_to_disk(
        str(tmp_path / "saved"))
    expected = {r["messages"][0]["content"] for r in _task(_jsonl(tmp_path / "qa.jsonl")).heldout(100)}
    for source in ("qa.parquet", "qa.csv"):
        assert {r["messages"][0]["content"] for r in _task(tmp_path / source).heldout(100)} == expected
    saved = _task(tmp_path / "saved", heldout_source=str(tmp_path / "saved"), heldout_split="test")
    assert saved.check() == {"task": "saved", "source": str(tmp_path / "saved"), "train_rows": 40, "heldout_rows": 10}
    with pytest.raises(TaskError, match="no split 'validation'"):
        _task(tmp_path / "saved", split="validation").check()


def test_errors_name_the_file_and_column(tmp_path, jsonl):
    with pytest.raises(TaskError, match=r"no column 'query' \(task.fields.prompt\); its columns are"):
        FileTask(str(jsonl), fields={"prompt": "query"}).check()
    with pytest.raises(TaskError, match="no prompt column"):
        FileTask(str(jsonl)).check()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TaskError, match="empty"):
        FileTask(str(empty)).check()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n\n{not json\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:3: not valid JSON \(Expecting property name"):
        FileTask(str(bad)).check()
    bad.write_text('{"prompt": "a"}\n["a", "b"]\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:2: expected a JSON object .* got list"):
        FileTask(str(bad)).check()
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"\x00\xff")
    with pytest.raises(TaskError, match="bad.csv: cannot be read as a dataset"):  # not JSONL: datasets' words
        FileTask(str(csv)).check()
    nonstr = _jsonl(tmp_path / "n.jsonl", [{"prompt": 3}])
    with pytest.raises(TaskError, match=r"row 1: column 'prompt' \(prompt\) must be a non-empty string"):
        FileTask(str(nonstr)).check()
    with pytest.raises(TaskError, match="held-out split is empty"):
        _task(jsonl, heldout_fraction=0.001).check()


@pytest.mark.slow
def test_hub_dataset_offline_and_not_cached_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(TaskError, match="hf:nobody/no-such-dataset: cannot be read as a dataset"):
        load_task(source="hf:nobody/no-such-dataset").check()


def test_builtin_tasks_keep_their_rows(monkeypatch):
    from ratchet.data import arithmetic

    task = builtin_task("arithmetic", seed=3)
    assert task.heldout(5) == arithmetic.make_problems(5, split="heldout", seed=3)
    assert task.train(5, 2) == arithmetic.make_problems(5, split="train", seed=5)
    assert task.default_judge == "answer" and task.stop == arithmetic.STOP
    with pytest.raises(TaskError, match="unknown built-in task"):
        builtin_task("nope")


def test_config_checks_the_task_section_before_any_model(tmp_path, jsonl):
    for bad, match in ((["task.name=my.jsonl"], "unknown built-in task 'my.jsonl'"),
                       ([f"task.source={tmp_path / 'none.jsonl'}"], "does not exist"),
                       ([f"task.source={tmp_path}/x.txt"], "does not exist"),
                       ([f"task.source={jsonl}", "task.fields.question=q"], "task.fields.question"),
                       ([f"task.source={jsonl}", "task.heldout_fraction=1.5"], "heldout_fraction"),
                       (["task.fields.prompt=q"], "give task.source"),
                       ([f"task.source={jsonl}", "task.template='{0}'"], "task.template"),
                       (["task.train_prompts=-1"], "task.train_prompts")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, bad)
    cfg = load_config(None, [f"task.source={jsonl}", "task.fields.prompt=question", "task.fields.answer=gold"])
    assert cfg.judge.name == "exact"  # a data file's default judge
    assert load_config(None, []).judge.name == "answer" and load_config(None, ["task.name=humaneval"]).judge.name \
        == "unit_tests"
    assert stages.make_task(cfg.task).check()["train_rows"] > 0
