"""``ratchet compare RUN RUN...``: the runs side by side in a terminal table and a one-file HTML page."""

import base64
import json
import re

import pytest
from rich.console import Console

from ratchet import cli
from ratchet.evaluate.metrics import wilson_interval
from ratchet.loop.compare_runs import compare_runs


def test_wilson_interval_hand_checked():
    # 8 of 10 at z = 1.96: center (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.99208 / 1.38416 = 0.71674,
    # half-width 1.96 * sqrt(0.8 * 0.2 / 10 + 1.96^2 / 400) / 1.38416 = 0.22658
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # no successes: the interval still has width (the normal approximation collapses to [0, 0])
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _run(path, rounds, metric="accuracy", minutes=12.25):
    path.mkdir(parents=True)
    summary = {"rounds": rounds, "metric": metric, "metric_start": rounds[0][metric],
               "metric_best": max(r[metric] for r in rounds if r["kept"]), "best_model": str(path / "m")}
    if minutes is not None:
        summary["minutes"] = minutes
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def _acc(r, correct, n, kept=True):
    return {"round": r, "metric": "accuracy", "accuracy": correct / n, "correct": correct, "n": n, "kept": kept}


@pytest.fixture
def two_runs(tmp_path):
    a = _run(tmp_path / "runs" / "dpo", [_acc(0, 8, 10), _acc(1, 9, 10), _acc(2, 7, 10, kept=False)], minutes=12.25)
    b = _run(tmp_path / "runs" / "kto", [_acc(0, 8, 10), _acc(1, 10, 10)], minutes=3.5)
    return a, b


def _render(runs, out):
    console = Console(record=True, width=200)
    path = compare_runs(runs, out, console=console)
    return path, console.export_text()


def _rows(text):
    """Table body rows as lists of cells (rich's box characters split the cells)."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines()
            if line.strip().startswith("│")]


def test_table_holds_both_runs_with_intervals_kept_and_minutes(two_runs, tmp_path):
    path, text = _render(two_runs, tmp_path / "out" / "compare.html")
    assert "dpo" in text and "kto" in text and "accuracy" in text
    rows = {r[0]: r[1:] for r in _rows(text) if r[0] and r[0] not in ("round",)}
    lo, hi = wilson_interval(9, 10)
    assert rows["0"] == ["0.800 [0.490, 0.943]", "base", "0.800 [0.490, 0.943]", "base"]
    assert rows["1"] == [f"0.900 [{lo:.3f}, {hi:.3f}]", "yes", "1.000 [0.722, 1.000]", "yes"]
    assert rows["2"][:2] == [f"0.700 [{wilson_interval(7, 10)[0]:.3f}, {wilson_interval(7, 10)[1]:.3f}]", "no"]
    assert rows["2"][2:] == ["-", "-"]  # kto had no round 2
    assert rows["minutes"][0] == "12.2" and rows["minutes"][2] == "3.5"


def test_html_page_has_the_table_and_an_embedded_png(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    path, _ = _render(two_runs, tmp_path / "out" / "compare.html")
    assert path == tmp_path / "out" / "compare.html"
    page = path.read_text()
    assert "0.800 [0.490, 0.943]" in page and "<th>dpo<br>accuracy</th>" in page and "<th>kto<br>kept</th>" in page
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    png = base64.b64decode(sources[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "src=\"plots/" not in page and "file:" not in page  # one file: nothing to load beside it


def test_different_metrics_are_said_and_plotted_on_separate_axes(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    import io

    from matplotlib.image import imread

    wr = _run(tmp_path / "runs" / "judge", [
        {"round": 0, "metric": "win_rate", "win_rate": 0.5, "low": 0.4, "high": 0.6, "kept": True},
        {"round": 1, "metric": "win_rate", "win_rate": 0.62, "low": 0.51, "high": 0.7, "kept": True}],
        metric="win_rate", minutes=None)
    path, text = _render([two_runs[0], wr], tmp_path / "mixed.html")
    assert "different held-out metrics" in text and "dpo: accuracy" in text and "judge: win_rate" in text
    rows = {r[0]: r[1:] for r in _rows(text) if r[0]}
    assert rows["1"][2:] == ["0.620 [0.510, 0.700]", "yes"]  # the win rate's own bootstrap interval
    assert rows["minutes"][2].startswith("-")  # no total in the summary: shown as unknown
    page = path.read_text()
    assert "different held-out metrics" in page
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    one = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"',
                                     _render(two_runs, tmp_path / "one.html")[0].read_text()).group(1))
    # two axes side by side: twice the width of the one-metric plot
    assert imread(io.BytesIO(png)).shape[1] == 2 * imread(io.BytesIO(one)).shape[1]


def test_cli_compare_writes_compare_html_in_the_current_dir(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", str(two_runs[0]), str(two_runs[1])]) == 0
    out = capsys.readouterr().out
    assert "0.800 [0.490, 0.943]" in out and "dpo" in out and "kto" in out
    assert out.strip().splitlines()[-1] == "compare.html" and (tmp_path / "compare.html").is_file()


def test_cli_compare_a_dir_without_summary_is_exit_2_with_one_line(two_runs, tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert cli.main(["compare", str(two_runs[0]), str(empty), "--out", str(tmp_path / "c.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err and "summary.json" in err
    assert not (tmp_path / "c.html").exists()
    assert cli.main(["compare", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (empty / "summary.json").write_text("{not json")
    assert cli.main(["compare", str(empty)]) == 2
    assert "not readable JSON" in capsys.readouterr().err
