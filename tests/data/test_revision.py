"""SRPO's six sequences from hand-made pairs: which prompt holds which draft, which tokens are scored."""

from __future__ import annotations

import inspect

import pytest

from conftest import tokenize_revision
from ratchet.data.revision import (SEQUENCE_NAMES, default_template, expand_revision, load_template,
                                   revision_messages)
from ratchet.losses.srpo import srpo_loss

QUESTION = "Tom has 3 apples and gets 4 more. How many?"
ROW = {"id": "p1", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
       "chosen": "3 + 4 = 7\nAnswer: 7", "rejected": "3 + 4 = 8\nAnswer: 8",
       "chosen_complete": True, "rejected_complete": False}


@pytest.fixture
def plain(tmp_path):
    """A custom template file whose rendering is easy to predict."""
    path = tmp_path / "plain.txt"
    path.write_text("Q: $prompt\nDRAFT: ${draft}\nImprove it (costs $$0).\n")
    return load_template(path)


def test_names_are_the_srpo_objective_inputs():
    params = inspect.signature(srpo_loss).parameters
    for name in SEQUENCE_NAMES:
        assert f"policy_{name}_logps" in params and f"ref_{name}_logps" in params
    assert 2 * len(SEQUENCE_NAMES) == sum(p.endswith("_logps") for p in params)


def test_custom_template_file_is_used(plain):
    messages = revision_messages(ROW["messages"], "DRAFT TEXT", plain)
    assert messages[-1] == {"role": "user", "content": f"Q: {QUESTION}\nDRAFT: DRAFT TEXT\nImprove it (costs $0)."}
    assert messages[0] == ROW["messages"][0]  # earlier turns (system) kept as they are
    assert ROW["messages"][-1]["content"] == QUESTION  # the row is not modified


def test_bundled_template_holds_question_and_draft():
    text = revision_messages([{"role": "user", "content": "Q?"}], "my draft")[-1]["content"]
    assert text.startswith("Q?\n") and "\nmy draft\n" in text and not text.endswith("\n")
    assert load_template("revision").template == default_template().template


def test_bad_templates_are_rejected(tmp_path):
    (tmp_path / "no_draft.txt").write_text("Q: $prompt\n")
    (tmp_path / "extra.txt").write_text("$prompt $draft $answer\n")
    (tmp_path / "dollar.txt").write_text("$prompt $draft costs $5\n")
    with pytest.raises(ValueError, match=r"missing \['\$draft'\]"):
        load_template(tmp_path / "no_draft.txt")
    with pytest.raises(ValueError, match=r"unknown \['\$answer'\]"):
        load_template(tmp_path / "extra.txt")
    with pytest.raises(ValueError, match=r"\$\$"):
        load_template(tmp_path / "dollar.txt")
    with pytest.raises(FileNotFoundError):
        load_template(tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="user turn"):
        revision_messages([{"role": "assistant", "content": "x"}], "d")


def test_expansion_puts_the_named_draft_in_the_prompt(plain):
    seqs = expand_revision(ROW, plain)
    assert tuple(seqs) == SEQUENCE_NAMES
    assert seqs["chosen"].messages == seqs["rejected"].messages == ROW["messages"]
    for target in ("chosen", "rejected"):
        for draft in ("chosen", "rejected"):
            seq = seqs[f"revise_{target}_from_{draft}"]
            assert seq.messages == revision_messages(ROW["messages"], ROW[draft], plain)
            assert seq.text == ROW[target] and seq.complete == ROW[f"{target}_complete"]
    assert "Answer: 8" in seqs["revise_chosen_from_rejected"].messages[-1]["content"]
    assert "Answer: 7" in seqs["revise_rejected_from_chosen"].messages[-1]["content"]
    assert seqs["chosen"].complete and not seqs["rejected"].complete
    bare = expand_revision({k: ROW[k] for k in ("messages", "chosen", "rejected")}, plain)
    assert all(s.complete for s in bare.values())  # missing *_complete means it ended by itself


def test_expansion_names_the_bad_row():
    with pytest.raises(ValueError, match="'p2'.*missing 'rejected'"):
        expand_revision({"id": "p2", "messages": ROW["messages"], "chosen": "x"})
    with pytest.raises(ValueError, match="empty chosen"):
        expand_revision({**ROW, "chosen": "  "})


def test_tokens_mask_the_prompt_and_score_the_completion(tiny_tokenizer, plain):
    tok = tiny_tokenizer
    seqs = expand_revision(ROW, plain)
    toks = tokenize_revision(ROW, tok, plain, max_length=512)
    assert tuple(toks) == SEQUENCE_NAMES
    for name, t in toks.items():
        n_prompt = len(t.input_ids) - t.num_completion_tokens
        assert t.completion_mask == [0] * n_prompt + [1] * t.num_completion_tokens and not t.truncated
        prompt = tok.decode(t.input_ids[:n_prompt])
        completion = tok.decode(t.input_ids[n_prompt:])
        assert prompt == tok.apply_chat_template(seqs[name].messages, add_generation_prompt=True, tokenize=False)
        # the complete answer ends with the end-of-turn token; the cut-off (rejected) one does not
        assert completion == seqs[name].text + ("<|im_end|>" if seqs[name].complete else "")
    prompt_of = {n: t.input_ids[:len(t.input_ids) - t.num_completion_tokens] for n, t in toks.items()}
    assert prompt_of["chosen"] == prompt_of["rejected"]
    assert prompt_of["revise_chosen_from_rejected"] == prompt_of["revise_rejected_from_rejected"]
    assert prompt_of["revise_chosen_from_chosen"] == prompt_of["revise_rejected_from_chosen"]
    assert prompt_of["revise_chosen_from_rejected"] != prompt_of["revise_chosen_from_chosen"]
    assert "DRAFT: 3 + 4 = 8" in tok.decode(prompt_of["revise_chosen_from_rejected"])


def test_long_revision_prompts_truncate_or_fail_by_name(tiny_tokenizer, plain):
    plain_len = len(tokenize_revision(ROW, tiny_tokenizer, plain, max_length=512)["chosen"].input_ids)
    with pytest.raises(ValueError, match="'p1', sequence revise_chosen_from_rejected: prompt is"):
        tokenize_revision(ROW, tiny_tokenizer, plain, max_length=plain_len)  # the plain ones fit, revisions not
    revision_prompt = len(tokenize_revision(ROW, tiny_tokenizer, plain, max_length=512)["revise_chosen_from_chosen"]
                          .input_ids) - len(tiny_tokenizer(ROW["chosen"])["input_ids"]) - 1
    cut = tokenize_revision(ROW, tiny_tokenizer, plain, max_length=revision_prompt + 3)
    assert cut["revise_chosen_from_chosen"].truncated and cut["revise_chosen_from_chosen"].num_completion_tokens == 3


def test_draft_revision_pairs_prefer_the_better_of_a_draft_and_its_revision():
    from ratchet.data.revision import draft_revision_pairs

    msgs = [{"role": "user", "content": "q"}]
    samples = {"id": "p", "messages": msgs, "completions": [{"text": t, "finish_reason": "eos"}
                                                            for t in ("wrong", "right", "same", "cut")]}
    judged = {"id": "p", "scores": [0.0, 1.0, 0.0, 0.0], "correct": [False, True, False, False]}
    revised = {"id": "p", "draft_indices": [0, 1, 2, 3],
               "completions": [{"text": "fixed", "finish_reason": "eos"}, {"text": "broken", "finish_reason": "stop"},
                               {"text": "same", "finish_reason": "eos"},
                               {"text": "fixed too", "finish_reason": "length"}]}
    verdicts = {"id": "p", "scores": [1.0, 0.0, 0.0, 1.0], "correct": [True, False, False, True]}
    pairs = draft_revision_pairs(samples, judged, revised, verdicts)
    # improved: the revision over its draft; broken: the draft over the revision; unchanged and cut: no pair
    assert [(p["chosen"], p["rejected"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [
        ("fixed", "wrong", 1.0, 0.0), ("right", "broken", 1.0, 0.0)]
    assert all(p["messages"] == msgs and p["origin"] == "revision" and p["chosen_complete"] for p in pairs)
    kept_cut = draft_revision_pairs(samples, judged, revised, verdicts, drop_truncated=False)
    assert kept_cut[-1]["chosen"] == "fixed too" and kept_cut[-1]["chosen_complete"] is False
    # a scoring judge (no verdicts): the higher score wins, an equal score makes no pair
    scored = draft_revision_pairs(samples, {"id": "p", "scores": [0.2, 0.5, 0.1, 0.0]}, revised,
                                  {"id": "p", "scores": [0.7, 0.5, 0.3, 0.0]})
    assert [(p["chosen"], p["rejected"]) for p in scored] == [("fixed", "wrong")]
    with pytest.raises(ValueError, match="needs 'draft_indices'"):
        draft_revision_pairs(samples, judged, {**revised, "draft_indices": [0]}, verdicts)
