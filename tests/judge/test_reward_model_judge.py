"""Reward-model judge on a tiny random GPT-2 classifier with a character tokenizer (no downloads)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")
from transformers import AutoModelForSequenceClassification, GPT2Config, PreTrainedTokenizerFast  # noqa: E402

from ratchet.judge.reward_model import RewardModelJudge  # noqa: E402


def _tokenizer():
    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2, "\n": 3}
    for c in map(chr, range(32, 127)):
        vocab[c] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                        bos_token_id=2, eos_token_id=2)
    return AutoModelForSequenceClassification.from_config(config), tokenizer


PROMPT = {"id": "p", "messages": [{"role": "user", "content": "Say something."}]}
COMPLETIONS = ["ok", "a much longer answer than the others", "", "medium answer", "x" * 60]


def test_batched_scores_equal_one_at_a_time(parts):
    one = RewardModelJudge(*parts, batch_size=1).judge(PROMPT, COMPLETIONS)
    many = RewardModelJudge(*parts, batch_size=4).judge(PROMPT, COMPLETIONS)
    assert [j.score for j in one] == pytest.approx([j.score for j in many], abs=1e-5)
    assert len({round(j.score, 6) for j in one}) == len(COMPLETIONS)  # distinct: order is kept
    assert all(j.correct is None and j.detail["reward"] == j.score for j in one)


def test_left_truncation_keeps_the_completion(parts):
    judge = RewardModelJudge(*parts, max_length=16)
    ids = judge.render([{"role": "user", "content": "q" * 100}, {"role": "assistant", "content": "the end"}])
    assert len(ids) == 16 and parts[1].decode(ids).replace(" ", "").endswith("theend")


def test_chat_template_is_used(parts):
    model, tokenizer = parts
    tokenizer = _tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    judge = RewardModelJudge(model, tokenizer)
    assert tokenizer.decode(judge.render([{"role": "user", "content": "hi"}])).replace(" ", "") == "<user>hi"


def test_from_pretrained_round_trip(parts, tmp_path):
    model, tokenizer = parts
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = RewardModelJudge.from_pretrained(str(tmp_path))
    want = RewardModelJudge(model, tokenizer).judge(PROMPT, COMPLETIONS[:2])
    got = loaded.judge(PROMPT, COMPLETIONS[:2])
    assert [j.score for j in got] == pytest.approx([j.score for j in want], abs=1e-5)


def test_bad_input(parts):
    with pytest.raises(ValueError, match="label 3 is out of range"):
        RewardModelJudge(*parts, label=3)
    with pytest.raises(KeyError, match="needs 'messages'"):
        RewardModelJudge(*parts).judge({"id": "q"}, ["x"])
