"""The inference revision loop: N+1 answers per prompt, each revision prompt holding the previous answer."""

from __future__ import annotations

import pytest

from ratchet.data.revision import load_template, revision_messages
from ratchet.generate.base import Sample, SamplingParams
from ratchet.generate.revise import revise

PROMPTS = [{"id": "a", "task": "t", "messages": [{"role": "user", "content": "first?"}]},
           {"id": "b", "task": "t", "messages": [{"role": "user", "content": "second?"}]}]


class CountingSampler:
    """Answers ``<id>/<step>``, where step is one more than the step of the draft in the prompt."""

    def __init__(self):
        self.calls = []

    def sample(self, prompts, params):
        self.calls.append((prompts, params))
        out = []
        for p in prompts:
            text = p[-1]["content"]
            qid = "a" if "first?" in text else "b"
            step = max([int(w.split("/")[1]) + 1 for w in text.split() if w.startswith(qid + "/")], default=0)
            out.append([Sample(f"{qid}/{step}", 1, "eos")])
        return out


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("$prompt\nDraft: $draft\nBetter:")
    return load_template(path)


def test_draft_then_n_revisions_batched(template):
    sampler = CountingSampler()
    rows = revise(sampler, PROMPTS, revisions=3, params=SamplingParams(k=1, temperature=0.0, seed=5), template=template)
    assert [r["answers"] for r in rows] == [[f"a/{k}" for k in range(4)], [f"b/{k}" for k in range(4)]]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["task"] == "t"  # the prompt record is kept
    assert rows[0]["finish_reasons"] == ["eos"] * 4 and rows[0]["sampling"]["revisions"] == 3
    assert len(sampler.calls) == 4 and all(len(prompts) == 2 for prompts, _ in sampler.calls)  # one call per step
    assert [params.seed for _, params in sampler.calls] == [5, 6, 7, 8]
    assert sampler.calls[0][0] == [p["messages"] for p in PROMPTS]  # the draft sees the plain prompt
    for step, (prompts, _) in enumerate(sampler.calls[1:], start=1):  # each revision sees only the previous answer
        assert prompts == [revision_messages(p["messages"], f"{p['id']}/{step - 1}", template) for p in PROMPTS]
    assert PROMPTS[0]["messages"] == [{"role": "user", "content": "first?"}]


def test_given_drafts_are_step_zero_and_only_revisions_are_sampled(template):
    sampler = CountingSampler()
    drafts = [{"text": "a/4", "finish_reason": "length"}, {"text": "b/0"}]
    rows = revise(sampler, PROMPTS, revisions=2, params=SamplingParams(k=1, seed=5), template=template, drafts=drafts)
    assert [r["answers"] for r in rows] == [["a/4", "a/5", "a/6"], ["b/0", "b/1", "b/2"]]
    assert rows[0]["finish_reasons"] == ["length", "eos", "eos"] and rows[1]["finish_reasons"][0] is None
    assert [params.seed for _, params in sampler.calls] == [6, 7]  # the seeds of steps 1 and 2, as without drafts
    first = [revision_messages(p["messages"], d["text"], template) for p, d in zip(PROMPTS, drafts)]
    assert sampler.calls[0][0] == first  # revision 1 revises the given draft
    with pytest.raises(ValueError, match="1 drafts for 2 prompts"):
        revise(sampler, PROMPTS, revisions=1, params=SamplingParams(k=1), drafts=drafts[:1])


def test_zero_revisions_is_the_draft_only_and_bad_arguments_fail():
    rows = revise(CountingSampler(), PROMPTS, revisions=0, params=SamplingParams(k=1))
    assert [r["answers"] for r in rows] == [["a/0"], ["b/0"]]
    assert revise(CountingSampler(), [], revisions=2, params=SamplingParams()) == []
    with pytest.raises(ValueError, match="k=1"):
        revise(CountingSampler(), PROMPTS, revisions=1, params=SamplingParams(k=2))
    with pytest.raises(ValueError, match=">= 0"):
        revise(CountingSampler(), PROMPTS, revisions=-1, params=SamplingParams())


def test_tiny_model_writes_n_plus_one_answers(tiny):
    from ratchet.generate.hf import HFSampler

    model, tok = tiny
    sampler = HFSampler(model, tok, batch_size=4, progress=False)
    rows = revise(sampler, PROMPTS, revisions=2, params=SamplingParams(k=1, temperature=0.0, max_new_tokens=4))
    assert [len(r["answers"]) for r in rows] == [3, 3]
    assert all(isinstance(a, str) for r in rows for a in r["answers"])
    assert all(f in ("eos", "length", "stop") for r in rows for f in r["finish_reasons"])
