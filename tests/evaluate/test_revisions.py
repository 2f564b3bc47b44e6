"""Metrics per revision step on hand-made rows: accuracy, win-rate against gold, the plot."""

from __future__ import annotations

import re

import pytest

from ratchet.evaluate.revisions import judge_revisions, plot_revisions, score_revisions, win_rates_vs_gold
from ratchet.generate.base import Sample
from ratchet.judge.answer import AnswerJudge
from ratchet.judge.base import Judgment
from ratchet.judge.llm_judge import PairwiseJudge


def _row(i, answer, answers, **extra):
    return {"id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}], "answer": answer,
            "answers": answers, **extra}


ROWS = [_row(0, "7", ["Answer: 8", "Answer: 7", "Answer: 7"]),     # fixed at revision 1
        _row(1, "12", ["Answer: 12", "Answer: 12", "Answer: 13"]),  # broken at revision 2
        _row(2, "5", ["no number", "Answer: 4", "Answer: 5"]),      # fixed at revision 2
        _row(3, "9", ["Answer: 9", "Answer: 9", "Answer: 9"])]


def test_accuracy_per_revision_step():
    assert score_revisions(ROWS, AnswerJudge()) == [0.5, 0.75, 0.75]
    assert [j.correct for j in judge_revisions(ROWS, AnswerJudge())[2]] == [False, False, True]


def test_unknown_verdicts_are_left_out_and_non_verifiers_fail():
    class Partial:  # no verdict on the draft of the first row
        def judge(self, prompt, completions):
            return [Judgment(1.0, None if (prompt["id"] == "p0" and i == 0) else c.endswith(prompt["answer"]))
                    for i, c in enumerate(completions)]

    assert score_revisions(ROWS, Partial()) == [2 / 3, 0.75, 0.75]

    class Preference:
        def judge(self, prompt, completions):
            return [Judgment(0.5) for _ in completions]

    with pytest.raises(ValueError, match="win_rates_vs_gold"):
        score_revisions(ROWS, Preference())
    with pytest.raises(ValueError, match="same non-empty 'answers'"):
        score_revisions(ROWS + [_row(9, "1", ["Answer: 1"])], AnswerJudge())


class LongerWins:
    """A sampler playing a judge that prefers the longer answer, read from the pairwise template."""

    def sample(self, prompts, params):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            a = re.search(r"\[Answer A\]\n(.*?)\n\[End of answer A\]", text, re.DOTALL).group(1)
            b = re.search(r"\[Answer B\]\n(.*?)\n\[End of answer B\]", text, re.DOTALL).group(1)
            out.append([Sample("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]", 1, "stop")])
        return out


def test_win_rate_against_gold_per_revision_step():
    rows = [_row(0, "gold", ["a", "gold", "longer one"], reference="mid answer"),
            _row(1, "gold", ["b", "long answer", "long answer"], reference="mid answer")]
    rates = win_rates_vs_gold(rows, PairwiseJudge(LongerWins()), n_boot=200)
    assert [r.rate for r in rates] == [0.0, 0.75, 1.0]  # "gold" vs "gold" is a tie in both orders
    assert (rates[1].wins, rates[1].ties, rates[1].losses, rates[1].n) == (1, 1, 0, 2)
    assert [r.rate for r in win_rates_vs_gold(rows, PairwiseJudge(LongerWins()), gold_key="reference",
                                              n_boot=50)] == [0.0, 0.5, 0.75]  # equal lengths tie
    with pytest.raises(ValueError, match="no gold answer 'summary'"):
        win_rates_vs_gold(rows, PairwiseJudge(LongerWins()), gold_key="summary")


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_revisions({"srpo": [0.5, 0.75, 0.75], "dpo": [0.5, 0.5, 0.4]}, tmp_path / "sub" / "rev.png",
                          title="held-out accuracy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_revisions({}, tmp_path / "empty.png")
