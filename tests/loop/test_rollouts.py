"""SCoRe's episodes: the second-turn prompt, a two-turn rollout from a scripted sampler (which
sample follows which first attempt, rewards per turn), and the two-attempt metrics."""

import pytest

from ratchet.data.correction import INSTRUCTION, correction_messages
from ratchet.evaluate.correction import correction_metrics
from ratchet.generate.base import Sample, SamplingParams
from ratchet.judge.answer import AnswerJudge
from ratchet.loop.rollouts import judge_reward, two_turn

X = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3 + 4?"}]


def test_correction_messages():
    out = correction_messages(X, "Answer: 8")
    assert out == X + [{"role": "assistant", "content": "Answer: 8"}, {"role": "user", "content": INSTRUCTION}]
    assert len(X) == 2  # not modified
    with pytest.raises(ValueError, match="ending with a user turn"):
        correction_messages(out[:-1], "Answer: 7")


class ScriptedSampler:
    """Attempt 1: "Answer: 7" for even samples, "Answer: 8" for odd ones; attempt 2 repeats the
    last number of the first attempt minus one (read from the conversation it continues)."""

    def __init__(self):
        self.calls = []

    def sample(self, prompts, params):
        self.calls.append((len(prompts), params.k, params.seed))
        if prompts[0][-1]["content"] != INSTRUCTION:
            return [[Sample(f"Answer: {7 + i % 2}", 3, "eos") for i in range(params.k)] for _ in prompts]
        return [[Sample(f"Answer: {int(p[-2]['content'].split()[-1]) - 1}", 3, "stop")] for p in prompts]


def test_two_turn_rollout_pairs_each_second_attempt_with_its_first():
    sampler = ScriptedSampler()
    rows = [{"id": "a", "messages": X, "answer": "7"}, {"id": "b", "messages": X, "answer": "6"}]
    out = two_turn(sampler, SamplingParams(k=2, max_new_tokens=8), judge_reward(AnswerJudge()), INSTRUCTION)(rows, 5)
    assert sampler.calls == [(2, 2, 5), (4, 1, 6)]  # k first attempts per prompt, then one second attempt each
    first, second = out.sequences["first"], out.sequences["second"]
    assert [s.text for s in first[0]] == ["Answer: 7", "Answer: 8"]
    assert [s.text for s in second[0]] == ["Answer: 6", "Answer: 7"]  # 7 -> 6, 8 -> 7
    assert second[1][1].messages == correction_messages(X, "Answer: 8")
    assert first[0][0].complete and second[0][0].complete  # eos and stop both end by themselves
    assert out.values["first_rewards"] == [[1.0, 0.0], [0.0, 0.0]]
    assert out.values["second_rewards"] == [[0.0, 1.0], [1.0, 0.0]]  # a: right->wrong, wrong->right
    assert out.records[0]["second_completions"][1]["text"] == "Answer: 7"


def test_correction_metrics():
    m = correction_metrics([True, True, False, False], [True, False, True, True])
    assert m == {"accuracy_t1": 0.5, "accuracy_t2": 0.75, "delta_t1_t2": 0.25, "wrong_to_right": 0.5,
                 "right_to_wrong": 0.25, "n": 4}
    with pytest.raises(ValueError):
        correction_metrics([True], [])
