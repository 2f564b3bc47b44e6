"""The unseen-wording arithmetic set (issue 21): right answers, none of the training phrases, the
committed file is what the generator makes."""

import json
import re
from pathlib import Path

from ratchet.data import arithmetic

TRAINING_PHRASES = ("gets", "more. How", "gives away", "boxes with", "buys", "has ", "How many")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arithmetic-unseen" / "heldout.jsonl"


def _question(row: dict) -> str:
    return row["messages"][0]["content"].split("\n")[0]


def test_answers_follow_from_the_numbers_in_the_question():
    for row in arithmetic.make_unseen_problems(200, seed=3):
        q, numbers = _question(row), [int(x) for x in re.findall(r"\d+", _question(row))]
        if "dropped" in q or "drops" in q:
            expected = numbers[0] + numbers[1]
        elif "taken out" in q:
            expected = numbers[0] - numbers[1]
        elif "packets" in q:
            expected = numbers[0] * numbers[1]
        else:  # started with a, handed b, lost c
            expected = numbers[0] + numbers[1] - numbers[2]
        assert row["answer"] == str(expected), q


def test_no_training_phrase_occurs_and_the_instruction_is_the_tasks():
    train_questions = [_question(r) for r in arithmetic.make_problems(200, split="train", seed=0)]
    assert all(any(p in q for p in TRAINING_PHRASES) for q in train_questions)  # the phrases are real
    for row in arithmetic.make_unseen_problems(200, seed=0):
        assert not any(p in _question(row) for p in TRAINING_PHRASES), _question(row)
        assert row["messages"][0]["content"].endswith(arithmetic.INSTRUCTION)


def test_every_kind_occurs_and_the_committed_set_is_the_generators():
    rows = arithmetic.make_unseen_problems(200, seed=0)
    assert len({r["id"] for r in rows}) == 200
    kinds = {"drops": 0, "taken out": 0, "packets": 0, "lost": 0}
    for r in rows:
        for k in kinds:
            kinds[k] += k in _question(r)
    assert all(n >= 30 for n in kinds.values()), kinds
    assert [json.loads(line) for line in EXAMPLE.read_text().splitlines()] == rows
