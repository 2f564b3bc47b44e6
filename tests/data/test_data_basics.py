"""Arithmetic task, answer verifier, pairing, JSONL records, tokenisation and prompt masking."""

import json
import re

import pytest

from ratchet.data.arithmetic import make_problems
from ratchet.data.pairing import build_pairs
from ratchet.data.records import RecordError, read_jsonl, write_jsonl
from ratchet.data.tokenize import prompt_ids, tokenize_completion
from ratchet.judge.answer import AnswerJudge, extract_answer


def test_arithmetic_splits_are_disjoint_and_deterministic():
    train = make_problems(500, split="train", seed=3)
    held = make_problems(200, split="heldout", seed=3)
    assert not {p["messages"][0]["content"] for p in train} & {p["messages"][0]["content"] for p in held}
    assert make_problems(20, split="train", seed=3) == train[:20]
    assert make_problems(20, split="train", seed=4) != train[:20]
    assert len({p["id"] for p in train}) == 500


def test_arithmetic_answers_are_right():
    for p in make_problems(200, split="train"):
        q = p["messages"][0]["content"]
        nums = [int(w) for w in re.findall(r"\d+", q.split("\n")[0])]
        a = int(p["answer"])
        if "boxes" in q:
            assert a == nums[0] * nums[1]
        elif "gives away" in q:
            assert a == nums[0] - nums[1]
        elif "then gives" in q:
            assert a == nums[0] + nums[1] - nums[2]
        else:
            assert a == nums[0] + nums[1]


@pytest.mark.parametrize("text, expected", [
    ("3 + 4 = 7\nAnswer: 7", "7"),
    ("Answer: 1,234.", "1234"),
    ("The answer is 12. Check: 5", "12"),
    ("so we get 5 and then 9", "9"),
    ("Answer: -3", "-3"),
    ("Answer: 4.0", "4"),
    ("no digits here", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_judge():
    verdicts = AnswerJudge().judge({"id": "a", "answer": "7"}, ["Answer: 7", "Answer: 8", "nothing"])
    assert [v.score for v in verdicts] == [1.0, 0.0, 0.0]
    assert verdicts[1].detail == {"extracted": "8", "gold": "7"}
    with pytest.raises(KeyError, match="no 'answer'"):
        AnswerJudge().judge({"id": "a"}, ["x"])


def _row(texts, reasons=None):
    return {"id": "p", "messages": [{"role": "user", "content": "q"}],
            "completions": [{"text": t, "finish_reason": (reasons or ["eos"] * len(texts))[i]}
                            for i, t in enumerate(texts)]}


def test_correct_vs_incorrect_pairs():
    row = _row(["right", "wrong a", "wrong b", "right"], ["eos", "length", "eos", "eos"])
    judged = {"id": "p", "scores": [1, 0, 0, 1], "correct": [True, False, False, True]}
    pairs = build_pairs([row], [judged], strategy="correct_vs_incorrect", max_pairs_per_prompt=5)
    # duplicates of "right" count once: 1 distinct correct x 2 distinct incorrect
    assert len(pairs) == 2
    assert {p["rejected"] for p in pairs} == {"wrong a", "wrong b"}
    assert all(p["chosen"] == "right" and p["chosen_score"] == 1 for p in pairs)
    cut = [p for p in pairs if p["rejected"] == "wrong a"][0]
    assert cut["rejected_complete"] is False and cut["chosen_complete"] is True
    assert len(build_pairs([row], [judged], strategy="correct_vs_incorrect", max_pairs_per_prompt=1)) == 1
    none = {"id": "p", "scores": [0] * 4, "correct": [False] * 4}
    assert build_pairs([row], [none], strategy="correct_vs_incorrect", max_pairs_per_prompt=5) == []


def test_best_vs_worst_and_errors():
    row = _row(["a", "b", "c"])
    pairs = build_pairs([row], [{"id": "p", "scores": [0.2, 0.9, 0.1]}], strategy="best_vs_worst",
                        max_pairs_per_prompt=1)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "c")]
    with pytest.raises(ValueError, match="has no judgment"):
        build_pairs([row], [], strategy="best_vs_worst", max_pairs_per_prompt=1)
    with pytest.raises(ValueError, match="unknown pair strategy"):
        build_pairs([row], [], strategy="nope", max_pairs_per_prompt=1)


def test_jsonl_errors_name_the_row(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"id": 1, "a": 2}, {"id": 2}])
    assert read_jsonl(path, required=("id",)) == [{"id": 1, "a": 2}, {"id": 2}]
    with pytest.raises(RecordError, match=r"x.jsonl:2: missing key\(s\) \['a'\]"):
        read_jsonl(path, required=("id", "a"))
    path.write_text(json.dumps({"id": 1}) + "\n{oops\n")
    with pytest.raises(RecordError, match="x.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_chat_template_round_trip(tiny_tokenizer):
    messages = [{"role": "user", "content": "Tom has 3 apples. Answer: ?"}]
    ids = prompt_ids(tiny_tokenizer, messages)
    text = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tiny_tokenizer.decode(ids) == text
    assert text.endswith("<|im_start|>assistant\n") and "Tom has 3 apples" in text


def test_completion_only_masking(tiny_tokenizer):
    prompt = prompt_ids(tiny_tokenizer, [{"role": "user", "content": "2+2?"}])
    t = tokenize_completion(tiny_tokenizer, prompt, "Answer: 4", complete=True, max_length=200)
    n = len(prompt)
    assert t.input_ids[:n] == prompt and t.completion_mask[:n] == [0] * n
    assert t.completion_mask[n:] == [1] * (len(t.input_ids) - n)
    assert t.input_ids[-1] == tiny_tokenizer.eos_token_id  # finished: taught to stop
    assert tiny_tokenizer.decode(t.input_ids[n:-1]) == "Answer: 4"
    cut = tokenize_completion(tiny_tokenizer, prompt, "Answer: 4", complete=False, max_length=n + 3)
    assert cut.truncated and cut.num_completion_tokens == 3 and cut.input_ids[-1] != tiny_tokenizer.eos_token_id
    with pytest.raises(ValueError, match="no room"):
        tokenize_completion(tiny_tokenizer, prompt, "x", complete=True, max_length=n)
