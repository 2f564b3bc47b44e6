"""The HTML report: plots of every numeric metric, referenced relatively, and every round in the table."""

import re
import sys

import pytest

from ratchet.loop.report import write_report

SUMMARY = {
    "rounds": [
        {"round": 0, "accuracy": 0.3, "correct": 3, "n": 10, "kept": True},
        {"round": 1, "accuracy": 0.4, "k": 8, "sample_accuracy": 0.35, "pairs": 12, "train_loss": 0.69, "kept": True,
         "bstar": {"pass_at_1": 0.35, "balance_score": None}},
        {"round": 2, "accuracy": 0.2, "k": 8, "sample_accuracy": 0.5, "pairs": 0, "kept": False,
         "rollback": "held-out accuracy 0.2 < best 0.4", "skipped_training": "no pairs"},
    ],
    "best_model": "runs/x/round_1/train/model",
    "accuracy_start": 0.3,
}


def test_report_plots_every_numeric_metric(tmp_path):
    pytest.importorskip("matplotlib")
    out = write_report(tmp_path, SUMMARY)
    assert out == tmp_path / "report.html"
    text = out.read_text()
    sources = re.findall(r'<img src="([^"]+)"', text)
    # numbers in some round: accuracy, correct, n, sample_accuracy, pairs, train_loss, bstar.pass_at_1;
    # not kept (bool), rollback (str), bstar.balance_score (never a number), or k (8 in every round
    # that has it: a setting, shown in the table only)
    assert sorted(sources) == sorted(f"plots/{m}.png" for m in (
        "accuracy", "correct", "n", "sample_accuracy", "pairs", "train_loss", "bstar.pass_at_1"))
    for src in sources:
        assert (tmp_path / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one table row per round, the first cell its number; the escaped rollback message is there
    assert re.findall(r"<tr><td>(\d+)</td>", text) == ["0", "1", "2"]
    assert "<th>k</th>" in text
    assert "held-out accuracy 0.2 &lt; best 0.4" in text and "runs/x/round_1/train/model" in text


def test_report_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    text = write_report(tmp_path, SUMMARY).read_text()
    assert "<img" not in text and "matplotlib is not installed" in text
    assert re.findall(r"<tr><td>(\d+)</td>", text) == ["0", "1", "2"]


def test_a_regenerated_report_keeps_only_its_own_plots(tmp_path):
    pytest.importorskip("matplotlib")
    write_report(tmp_path, SUMMARY)
    fewer = {"rounds": [{"round": 0, "accuracy": 0.3}, {"round": 1, "accuracy": 0.4}]}
    write_report(tmp_path, fewer)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["accuracy.png"]


# --- what a round's answers look like: lengths, finish reasons, the same problems side by side ---

def _answer(text, tokens, reason):
    return {"text": text, "num_tokens": tokens, "finish_reason": reason, "extra": {}}


def _row(pid, completions, budget=16):
    return {"id": pid, "messages": [{"role": "user", "content": f"What is {pid}? <b>now</b>"}], "answer": f"gold-{pid}",
            "completions": completions, "sampling": {"max_new_tokens": budget}}


def _write_jsonl(path, rows, extra_lines=()):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))


PROBLEMS = [f"p{i}" for i in range(7)]


def fake_run(run_dir):
    """Three rounds: round 0 the base, round 1 offline (samples + held-out), round 2 on-policy (no
    completions.jsonl) and collapsed: 6 of its 7 held-out answers cut by the 16-token budget."""
    import json

    heldout = {
        0: [("short answer", 4, "eos")] * 5 + [("stopped here", 6, "stop"), ("rambling " * 4, 16, "length")],
        1: [("short answer", 5, "eos")] * 6 + [("rambling " * 4, 16, "length")],
        2: [("round two answer", 3, "eos")] + [("on and on " * 5, 16, "length")] * 6,
    }
    verdicts = {0: [True, False, True, True, True, True, False], 1: [True, True, True, True, True, True, False],
                2: [True, False, False, False, False, False, False]}
    for r in (0, 1, 2):
        d = run_dir / f"round_{r}"
        _write_jsonl(d / "eval" / "answers.jsonl",
                     [_row(pid, [_answer(f"{text} (r{r} {pid})", n, why)])
                      for pid, (text, n, why) in zip(PROBLEMS, heldout[r])])
        _write_jsonl(d / "eval" / "judgments.jsonl",
                     [{"id": pid, "correct": [v], "scores": [float(v)]} for pid, v in zip(PROBLEMS, verdicts[r])])
    # round 1's samples: 4 per problem for 2 problems, one cut; and a line that is not JSON
    _write_jsonl(run_dir / "round_1" / "completions.jsonl",
                 [_row("p0", [_answer("a", 2, "eos"), _answer("b", 4, "eos"), _answer("c", 6, "stop"),
                              _answer("d", 16, "length")], budget=16),
                  _row("p1", [_answer("e", 2, "eos")] * 4, budget=16)], extra_lines=["{not json"])
    summary = {"rounds": [{"round": 0, "metric": "accuracy", "accuracy": 5 / 7, "correct": 5, "n": 7, "kept": True},
                          {"round": 1, "metric": "accuracy", "accuracy": 6 / 7, "correct": 6, "n": 7, "kept": True},
                          {"round": 2, "metric": "accuracy", "accuracy": 1 / 7, "correct": 1, "n": 7, "kept": False,
                           "rollback": "held-out accuracy 0.14 below best"}],
               "best_model": str(run_dir / "round_1" / "train" / "model"), "metric": "accuracy",
               "metric_start": 5 / 7, "metric_best": 6 / 7, "n_heldout": 7, "minutes": 1.5}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def _answers_rows(text):
    """The answers table's rows as lists of cell texts (tags stripped)."""
    table = text.split("<table class='answers'>")[1].split("</table>")[0]
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
            for tr in re.findall(r"<tr>(.*?)</tr>", table) if "<td" in tr]


def test_report_shows_lengths_and_finish_reasons_per_round(tmp_path):
    pytest.importorskip("matplotlib")
    text = write_report(tmp_path, fake_run(tmp_path)).read_text()
    rows = _answers_rows(text)
    # round, which answers, file, count, mean tokens, budget, ended, stop string, cut, other
    assert rows == [
        ["0", "held-out", "round_0/eval/answers.jsonl", "7", f"{(20 + 6 + 16) / 7:.4g}", "16", "71% (5)", "14% (1)",
         "14% (1)", "0"],
        ["1", "samples", "round_1/completions.jsonl (1 unreadable lines skipped)", "8", f"{36 / 8:.4g}", "16",
         "75% (6)", "12% (1)", "12% (1)", "0"],
        ["1", "held-out", "round_1/eval/answers.jsonl", "7", f"{46 / 7:.4g}", "16", "86% (6)", "0% (0)", "14% (1)",
         "0"],
        # round 2 is on-policy: no completions.jsonl, so no samples row
        ["2", "held-out", "round_2/eval/answers.jsonl", "7", f"{99 / 7:.4g}", "16", "14% (1)", "0% (0)", "86% (6)",
         "0"],
    ]
    assert "<td class='warn'>86% (6)</td>" in text  # the collapse stands out
    assert "round 2: 6 of 7 held-out answers (86%) were cut by the token budget (16 tokens)" in text
    assert "train.loss={name: dpop}" in text  # and what to do about it
    # the quantities that change over rounds are plotted; every plot exists
    sources = re.findall(r'<img src="([^"]+)"', text)
    for name in ("answers-mean_tokens", "answers-eos", "answers-stop", "answers-length"):
        assert f"plots/{name}.png" in sources
    for src in sources:
        assert (tmp_path / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the rounds table keeps one row per round
    rounds_table = text.split("<h2>Rounds</h2>")[1]
    assert re.findall(r"<tr><td>(\d+)</td>", rounds_table) == ["0", "1", "2"]


def test_report_shows_held_out_answers_side_by_side(tmp_path):
    pytest.importorskip("matplotlib")
    text = write_report(tmp_path, fake_run(tmp_path)).read_text()
    section = text.split("<h2>Held-out answers side by side</h2>")[1].split("<h2>")[0]
    shown = re.findall(r"<h3>(p\d)</h3>", section)
    # the problems that change between rounds come first: p1 (wrong, right, wrong) and p2..p5 (right,
    # then wrong and cut in round 2) fill the five places; p0 (right and ended in every round) and p6
    # (cut in every round, the same each time) are left out
    assert shown == ["p1", "p2", "p3", "p4", "p5"]
    for pid in shown:
        block = section.split(f"<h3>{pid}</h3>")[1].split("<h3>")[0]
        assert f"What is {pid}? &lt;b&gt;now&lt;/b&gt;" in block  # the prompt, escaped
        assert f"gold-{pid}" in block
        header = re.findall(r"<th>([^<]+)</th>", block)
        assert header == ["round 0 (base)", "round 1", "round 2 (rolled back)"]
        answers = re.findall(r"<pre>(.*?)</pre>", block, re.S)
        # one answer per round, in order
        assert [re.search(r"\(r(\d) ", a).group(1) for a in answers] == ["0", "1", "2"]
    p1 = section.split("<h3>p1</h3>")[1].split("<h3>")[0]
    metas = re.findall(r"<div class='meta'>([^<]*)</div>", p1)
    assert metas == ["4 tokens, ended, wrong", "5 tokens, ended, correct", "16 tokens, cut by the budget, wrong"]


def test_report_of_a_run_without_round_files_has_no_answer_sections(tmp_path):
    text = write_report(tmp_path, SUMMARY).read_text()
    assert "Answers per round" not in text and "side by side" not in text and "Cut by the token budget" not in text


def test_an_on_policy_rounds_samples_come_from_its_rollouts(tmp_path):
    summary = fake_run(tmp_path)
    # rollouts rows (train/rollouts.jsonl) have finish reasons but no token counts
    _write_jsonl(tmp_path / "round_2" / "train" / "rollouts.jsonl",
                 [{"step": s, "id": "p0", "completions": [{"text": "x", "finish_reason": "length"},
                                                         {"text": "y", "finish_reason": "eos"}]} for s in (1, 2)])
    rows = _answers_rows(write_report(tmp_path, summary).read_text())
    assert ["2", "samples", "round_2/train/rollouts.jsonl", "4", "-", "-", "50% (2)", "0% (0)", "50% (2)", "0"] in rows
