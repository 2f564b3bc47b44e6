"""Preference data between ratchet and TRL: TRL's formats read as pairs rows, pairs written as rows TRL accepts."""

import json
import re

import pytest

from ratchet import cli
from ratchet.data.records import RecordError, write_jsonl
from ratchet.data.trl_format import export_pairs, from_trl, read_pairs, to_trl

SKY = [{"role": "user", "content": "What color is the sky?"}]
BLUE, GREEN = {"role": "assistant", "content": "It is blue."}, {"role": "assistant", "content": "It is green."}


def _ratchet_rows():
    return [{"id": "p1", "messages": SKY, "chosen": "It is blue.", "rejected": "It is green.", "chosen_score": 1.0,
             "rejected_score": 0.0, "chosen_complete": True, "rejected_complete": True},
            {"id": "p2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
             "chosen": "4", "rejected": "5"}]


# ------------------------------------------------------------------------------------ TRL -> ratchet
def test_standard_explicit_prompt_is_one_user_message():
    row = from_trl({"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "score_chosen": 9}, "f:1")
    assert row["messages"] == [{"role": "user", "content": "The sky is"}]
    assert (row["chosen"], row["rejected"], row["score_chosen"]) == (" blue.", " green.", 9)
    assert row["id"].startswith("trl-")


def test_conversational_explicit_prompt():
    row = from_trl({"id": "q7", "prompt": SKY, "chosen": [BLUE], "rejected": [GREEN]}, "f:1")
    assert row == {"id": "q7", "messages": SKY, "chosen": "It is blue.", "rejected": "It is green."}


def test_conversational_implicit_prompt_is_the_shared_prefix():
    system = [{"role": "system", "content": "Be brief."}]
    row = from_trl({"chosen": system + SKY + [BLUE], "rejected": system + SKY + [GREEN]}, "f:1")
    assert row["messages"] == system + SKY and (row["chosen"], row["rejected"]) == ("It is blue.", "It is green.")


def test_missing_id_is_stable_and_follows_the_prompt():
    a = from_trl({"prompt": "x", "chosen": "1", "rejected": "2"}, "f:1")
    b = from_trl({"prompt": [{"role": "user", "content": "x"}], "chosen": [BLUE], "rejected": [GREEN]}, "f:2")
    c = from_trl({"prompt": "y", "chosen": "1", "rejected": "2"}, "f:3")
    assert a["id"] == b["id"] != c["id"]


def test_ratchet_rows_and_unpaired_rows_pass_unchanged():
    unpaired = {"id": "u", "messages": SKY, "completion": "It is blue.", "label": True}
    for row in _ratchet_rows() + [unpaired]:
        assert from_trl(row, "f:1") is row


@pytest.mark.parametrize("row, says", [
    ({"prompt": "x", "chosen": "1"}, "missing key 'rejected'"),
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "standard implicit-prompt format"),
    ({"prompt": 3, "chosen": "1", "rejected": "2"}, "key 'prompt': expected a string or a list"),
    ({"prompt": "x", "chosen": [BLUE], "rejected": "2"}, "key 'chosen': expected a string"),
    ({"prompt": SKY, "chosen": "It is blue.", "rejected": [GREEN]}, "key 'chosen': expected a non-empty list"),
    ({"prompt": SKY, "chosen": [BLUE, BLUE], "rejected": [GREEN]}, "key 'chosen': expected exactly one assistant"),
    ({"prompt": SKY, "chosen": [BLUE], "rejected": SKY}, "key 'rejected': expected exactly one assistant"),
    ({"prompt": [{"role": "user"}], "chosen": [BLUE], "rejected": [GREEN]}, "key 'prompt': expected a non-empty"),
    ({"chosen": [BLUE], "rejected": [GREEN]}, "share no leading message"),
    ({"chosen": SKY + [BLUE], "rejected": SKY + [BLUE]}, "expected exactly one assistant message"),
    ({"prompt": "x", "completion": "1", "label": True}, "TRL unpaired rows"),
])
def test_malformed_rows_name_the_row_and_key(row, says):
    with pytest.raises(RecordError, match="^pairs.jsonl:4: ") as err:
        from_trl(row, "pairs.jsonl:4")
    assert says in str(err.value)


def test_read_pairs_names_the_file_and_row(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "1", "rejected": "2"}, {"prompt": "x"}])
    with pytest.raises(RecordError, match="^" + re.escape(f"{tmp_path}/p.jsonl:2: missing key 'chosen'")):
        read_pairs(path)


# ------------------------------------------------------------------------------------ ratchet -> TRL
def test_round_trip_is_identity():
    for row in _ratchet_rows():
        trl_row = to_trl(row)
        assert trl_row["id"] == row["id"] and trl_row.get("chosen_score") == row.get("chosen_score")
        assert from_trl(trl_row, "f:1") == row


def test_to_trl_refuses_rows_that_are_not_pairs():
    with pytest.raises(RecordError, match=r"^f:3: .*unpaired \(KTO\) row"):
        to_trl({"messages": SKY, "completion": "x", "label": True}, "f:3")
    with pytest.raises(RecordError, match=r"^f:3: missing key\(s\) \['rejected'\]"):
        to_trl({"messages": SKY, "chosen": "x"}, "f:3")


@pytest.mark.slow
def test_trl_accepts_what_to_trl_writes(tiny_tokenizer):
    data_utils = pytest.importorskip("trl.data_utils")
    for row in map(to_trl, _ratchet_rows()):
        assert data_utils.is_conversational(row)
        text = data_utils.maybe_apply_chat_template(row, tiny_tokenizer)
        for side in ("chosen", "rejected"):
            whole = tiny_tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=False)
            assert text["prompt"] + text[side] == whole
        assert text["prompt"].endswith("<|im_start|>assistant\n")
        assert text["chosen"].startswith(row["chosen"][0]["content"])


def test_implicit_prompt_matches_trl_extract_prompt():
    data_utils = pytest.importorskip("trl.data_utils")
    implicit = {"chosen": SKY + [BLUE], "rejected": SKY + [GREEN]}
    theirs, ours = data_utils.extract_prompt(implicit), from_trl(implicit, "f:1")
    assert ours["messages"] == theirs["prompt"]
    assert [ours["chosen"]] == [m["content"] for m in theirs["chosen"]]
    assert [ours["rejected"]] == [m["content"] for m in theirs["rejected"]]


def test_export_pairs_writes_trl_rows(tmp_path):
    src = write_jsonl(tmp_path / "pairs.jsonl", _ratchet_rows())
    out = export_pairs(src, tmp_path / "trl.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [to_trl(r) for r in _ratchet_rows()]
    with pytest.raises(RecordError, match="export format 'csv'"):
        export_pairs(src, tmp_path / "x.jsonl", format="csv")


# ------------------------------------------------------------------------------------ CLI
def _standard_rows(n=4):
    return [{"prompt": f"what is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}!"} for i in range(n)]


def test_cli_trains_on_a_trl_standard_file(tmp_path, tiny_model_dir):
    pairs = write_jsonl(tmp_path / "trl.jsonl", _standard_rows())
    out = tmp_path / "train"
    assert cli.main(["train", "--model", str(tiny_model_dir), "--pairs", str(pairs), "--out", str(out),
                     f"runs_dir={tmp_path / 'runs'}", "train.batch_size=2", "train.max_length=400"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["pairs"] == 4


def test_cli_export(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "trl.jsonl", _standard_rows(2))
    out = tmp_path / "export" / "pairs.trl.jsonl"
    assert cli.main(["export", "--pairs", str(pairs), "--format", "trl", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": r["prompt"]}] for r in _standard_rows(2)]
    assert all(r["chosen"][0]["role"] == "assistant" and "messages" not in r for r in rows)


def test_cli_export_bad_input_is_one_line(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"chosen": "a b", "rejected": "a c"}])
    assert cli.main(["export", "--pairs", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ratchet: {bad}:1: ")
    assert cli.main(["export", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "give either --pairs PATH" in capsys.readouterr().err
