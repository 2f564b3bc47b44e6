"""LLM-as-judge with fake samplers: both orders, ties, ratings, templates as files."""

from __future__ import annotations

import re

import pytest

from ratchet.generate.base import Sample, SamplingParams
from ratchet.judge.llm_judge import (PairwiseJudge, PointwiseJudge, combine_orders, load_template,
                                     parse_verdict)

PROMPT = {"id": "p", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


class FakeSampler:
    """Answers each judge prompt with ``reply(prompt_text)``; records what it was asked."""

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def sample(self, prompts, params: SamplingParams):
        self.seen += prompts
        return [[Sample(self.reply(p[-1]["content"]), 1, "stop") for _ in range(params.k)] for p in prompts]


def _answers(text: str) -> tuple[str, str]:
    a = re.search(r"\[Answer A\]\n(.*?)\n\[End of answer A\]", text, re.DOTALL).group(1)
    b = re.search(r"\[Answer B\]\n(.*?)\n\[End of answer B\]", text, re.DOTALL).group(1)
    return a, b


def prefers_longer(text: str) -> str:
    a, b = _answers(text)
    return "Reasoning...\n[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"


def test_consistent_judge_wins_and_loses():
    judge = PairwiseJudge(FakeSampler(prefers_longer))
    assert judge.compare("q", [("long answer", "short"), ("short", "long answer"), ("same", "same")]) == [1.0, 0.0, 0.5]


def test_position_biased_judge_gives_ties_when_orders_are_swapped():
    sampler = FakeSampler(lambda text: "[[A]]")  # always the first answer shown
    judge = PairwiseJudge(sampler)
    assert judge.compare("q", [("good", "bad"), ("bad", "good")]) == [0.5, 0.5]
    first, swapped = (_answers(p[-1]["content"]) for p in sampler.seen[:2])
    assert first == ("good", "bad") and swapped == ("bad", "good")  # both orders were asked


def test_unparseable_verdict_is_a_tie():
    assert PairwiseJudge(FakeSampler(lambda text: "I cannot decide")).compare("q", [("x", "y")]) == [0.5]


def test_verdict_parsing_and_combination():
    assert parse_verdict("[[A]] hmm, actually [[ B ]]") == "B"
    assert parse_verdict("no verdict") is None
    assert combine_orders("A", "B") == 1.0 and combine_orders("B", "A") == 0.0
    assert combine_orders("A", "A") == combine_orders("C", "C") == combine_orders(None, "B") == 0.5


def test_round_robin_scores():
    out = PairwiseJudge(FakeSampler(prefers_longer)).judge(PROMPT, ["4", "four", "it is four"])
    assert [j.score for j in out] == [0.0, 0.5, 1.0]
    assert out[2].detail == {"wins": 2.0, "comparisons": 2}
    assert PairwiseJudge(FakeSampler(prefers_longer)).judge(PROMPT, ["alone"])[0].score == 0.5


def test_self_rewarding_the_policy_judges_itself():
    policy = FakeSampler(lambda text: "Rating: [[8]]" if "[Answer]" in text else "4")
    completions = [s.text for s in policy.sample([PROMPT["messages"]], SamplingParams(k=2))[0]]
    out = PointwiseJudge(policy).judge(PROMPT, completions)
    assert [j.score for j in out] == [8.0, 8.0]


def test_pointwise_averages_samples_and_flags_missing_ratings():
    replies = iter(["Rating: [[6]]", "Rating: [[9]]", "no rating", "Rating: [[42]]"])
    judge = PointwiseJudge(FakeSampler(lambda text: next(replies)), SamplingParams(k=2, temperature=1.0))
    good, bad = judge.judge(PROMPT, ["a", "b"])
    assert good.score == 7.5 and good.detail["ratings"] == [6.0, 9.0]
    assert bad.score == 0.0 and "no rating" in bad.detail["error"]


def test_templates_are_data_files(tmp_path):
    assert "$answer_a" in load_template("pairwise", "pairwise").template
    custom = tmp_path / "mine.txt"
    custom.write_text("Q: $question\nA: $answer_a\nB: $answer_b\nVerdict as [[A]] or [[B]].")
    sampler = FakeSampler(lambda text: "[[C]]")
    PairwiseJudge(sampler, template=str(custom)).compare("2+2?", [("4", "5")])
    assert sampler.seen[0][-1]["content"].startswith("Q: 2+2?\nA: 4\nB: 5")
    broken = tmp_path / "broken.txt"
    broken.write_text("only $question")
    with pytest.raises(ValueError, match=r"lacks placeholder\(s\) \['\$answer_a', '\$answer_b'\]"):
        PairwiseJudge(sampler, template=str(broken))
    with pytest.raises(FileNotFoundError, match="neither"):
        load_template("nope", "pointwise")


def test_yes_no_judge_is_the_probability_of_yes(tiny):
    import math

    from ratchet.generate.score import sequence_logprobs
    from ratchet.judge.llm_judge import YesNoJudge

    model, tokenizer = tiny
    verdicts = YesNoJudge(model, tokenizer).judge(PROMPT, ["4", "five"])
    for v, answer in zip(verdicts, ["4", "five"]):
        ask = [{"role": "user", "content": load_template("yes_no", "yes_no").substitute(question="What is 2 + 2?",
                                                                                       answer=answer)}]
        (yes, _), (no, _) = sequence_logprobs(model, tokenizer, [(ask, "Yes", False), (ask, "No", False)])
        assert v.score == pytest.approx(math.exp(yes) / (math.exp(yes) + math.exp(no)), rel=1e-5)
        assert 0 < v.score < 1 and v.correct is None
    assert verdicts[0].score != verdicts[1].score
