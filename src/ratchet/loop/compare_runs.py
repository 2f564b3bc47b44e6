"""Several runs side by side (``ratchet compare RUN RUN...``).

This module owns reading the runs' ``summary.json`` files for a comparison, the terminal table
and the one-file HTML page with its plot; it reads nothing else of a run and writes nothing into
the run directories.

    table   one row per round (the union of the runs' rounds), one column group per run: the
            held-out metric with its 95% interval where known, and whether the round was kept;
            a last row with each run's minutes
    page    ``--out`` (default ``compare.html``): the same table and a PNG plot of each run's
            metric per round with interval bars, embedded as a base64 data URI, so the page is
            one file that reads offline

Intervals: ``evaluate.metrics.metric_interval``, as the run's own report: the round's recorded
``interval`` (Wilson for accuracy, the bootstrap for a mean score), else a win rate's bootstrap
``low``/``high``, else Wilson from ``correct`` and ``n`` (runs written before intervals were recorded;
their mean scores have none). Minutes are read from the run's ``timing.json`` (older runs: ``summary.json``).

Runs whose held-out metrics differ (say accuracy and win_rate) are compared anyway: each column
group names its run's metric, the table's caption says the metrics differ, and the plot has one
axes per metric, so no two different scales share an axis. A directory without a readable
``summary.json`` is a ``RecordError`` (the CLI prints its one line and exits 2).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ratchet.data.records import RecordError
from ratchet.evaluate.metrics import metric_interval
from ratchet.loop.report import value_cell


@dataclass
class RoundPoint:
    round: int
    value: float | None
    low: float | None
    high: float | None
    kept: bool | None


@dataclass
class Run:
    label: str
    path: Path
    metric: str
    minutes: float | None
    rounds: list[RoundPoint] = field(default_factory=list)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def load_run(path: str | Path, label: str | None = None) -> Run:
    path = Path(path)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        what = "does not exist" if not path.exists() else "has no summary.json"
        raise RecordError(f"compare: {path} {what}; give run directories (runs/<name>)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"compare: {summary_path} is not readable JSON ({e})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds"), list):
        raise RecordError(f"compare: {summary_path} has no 'rounds' list; is it a run summary?")
    rounds = [r for r in summary["rounds"] if isinstance(r, dict)]
    metric = summary.get("metric") or next((r["metric"] for r in rounds if r.get("metric")), "accuracy")
    points = []
    for i, r in enumerate(rounds):
        value = r.get(metric)
        interval = metric_interval({**r, "metric": metric}) if _number(value) else None
        points.append(RoundPoint(round=r.get("round", i), value=float(value) if _number(value) else None,
                                 low=interval[0] if interval else None, high=interval[1] if interval else None,
                                 kept=r.get("kept") if isinstance(r.get("kept"), bool) else None))
    minutes = _minutes(path, summary)
    return Run(label=label or path.name, path=path, metric=str(metric),
               minutes=float(minutes) if _number(minutes) else None, rounds=points)


def _minutes(path: Path, summary: dict):
    """The run's minutes: ``timing.json`` (kept out of summary.json so repeats are byte-identical),
    else an older run's ``summary.json``."""
    try:
        timing = json.loads((path / "timing.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        timing = None
    return timing.get("minutes") if isinstance(timing, dict) else summary.get("minutes")


def load_runs(paths) -> list[Run]:
    if not paths:
        raise RecordError("compare: give at least one run directory")
    paths = [Path(p) for p in paths]
    names = [p.name or str(p) for p in paths]
    # two runs of the same name from different folders are told apart by the path as given
    labels = [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]
    return [load_run(p, label) for p, label in zip(paths, labels)]


def _value_cell(p: RoundPoint | None) -> str:
    if p is None:
        return "-"
    return value_cell(p.value, (p.low, p.high) if p.low is not None else None)


def _kept_cell(p: RoundPoint | None) -> str:
    if p is None or p.kept is None:
        return "-"
    if p.round == 0:
        return "base"
    return "yes" if p.kept else "no"


def _minutes_cell(run: Run) -> str:
    return f"{run.minutes:.1f}" if run.minutes is not None else "- (no total: still running?)"


def _all_rounds(runs: list[Run]) -> list[int]:
    return sorted({p.round for run in runs for p in run.rounds})


def _by_round(run: Run) -> dict[int, RoundPoint]:
    return {p.round: p for p in run.rounds}


def caption(runs: list[Run]) -> str:
    metrics = list(dict.fromkeys(run.metric for run in runs))
    if len(metrics) == 1:
        return f"held-out {metrics[0]} per round, [95% interval] where known"
    which = ", ".join(f"{run.label}: {run.metric}" for run in runs)
    return f"the runs use different held-out metrics ({which}); plotted on separate axes"


def comparison_table(runs: list[Run]) -> Table:
    table = Table(title="ratchet compare", caption=caption(runs))
    table.add_column("round", justify="right")
    for run in runs:
        table.add_column(f"{run.label}\n{run.metric}", justify="right")
        table.add_column(f"{run.label}\nkept", justify="right")
    lookups = [_by_round(run) for run in runs]
    for r in _all_rounds(runs):
        cells = [str(r)]
        for lookup in lookups:
            cells += [_value_cell(lookup.get(r)), _kept_cell(lookup.get(r))]
        table.add_row(*cells)
    table.add_section()
    table.add_row("minutes", *[c for run in runs for c in (_minutes_cell(run), "")])
    return table


def _plot_png(runs: list[Run]) -> bytes:
    from matplotlib.figure import Figure  # lazily: matplotlib is the optional [plot] extra

    metrics = list(dict.fromkeys(run.metric for run in runs))
    fig = Figure(figsize=(6 * len(metrics), 4), dpi=100)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        group = [r for r in runs if r.metric == metric]
        for i, run in enumerate(group):
            pts = [p for p in run.rounds if p.value is not None]
            if not pts:
                continue
            x = [p.round + (i - 0.5 * (len(group) - 1)) * 0.04 for p in pts]  # a nudge keeps bars apart
            y = [p.value for p in pts]
            err = [[max(0.0, p.value - p.low) if p.low is not None else 0 for p in pts],
                   [max(0.0, p.high - p.value) if p.high is not None else 0 for p in pts]]
            line = ax.errorbar(x, y, yerr=err, fmt="-o", capsize=3, label=run.label)
            dropped = [(xx, p.value) for xx, p in zip(x, pts) if p.kept is False]
            if dropped:
                ax.plot(*zip(*dropped), "x", color=line[0].get_color(), markersize=11, markeredgewidth=2)
        ax.set_xlabel("round (x: rolled back)")
        ax.set_ylabel(f"held-out {metric}")
        ax.set_title(f"held-out {metric} per round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}caption{caption-side:bottom;"
          "padding:4px;color:#555}tr.total td{font-weight:bold}")


def comparison_html(runs: list[Run]) -> str:
    head = "<th>round</th>" + "".join(f"<th>{html.escape(run.label)}<br>{html.escape(run.metric)}</th>"
                                      f"<th>{html.escape(run.label)}<br>kept</th>" for run in runs)
    lookups = [_by_round(run) for run in runs]
    body = []
    for r in _all_rounds(runs):
        cells = "".join(f"<td>{html.escape(_value_cell(lk.get(r)))}</td><td>{_kept_cell(lk.get(r))}</td>"
                        for lk in lookups)
        body.append(f"<tr><td>{r}</td>{cells}</tr>")
    body.append("<tr class='total'><td>minutes</td>" + "".join(
        f"<td>{html.escape(_minutes_cell(run))}</td><td></td>" for run in runs) + "</tr>")
    table = f"<table><caption>{html.escape(caption(runs))}</caption>\n<tr>{head}</tr>\n" + "\n".join(body) + \
        "\n</table>"
    try:
        png = _plot_png(runs)
    except ImportError:
        plot = "<p>No plot: matplotlib is not installed (<code>pip install 'ratchet[plot]'</code>).</p>"
    else:
        plot = (f'<img alt="held-out metric per round" '
                f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
    sources = "".join(f"<li>{html.escape(run.label)}: <code>{html.escape(str(run.path))}</code></li>"
                      for run in runs)
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>ratchet compare</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>ratchet compare</h1>\n<ul>{sources}</ul>\n"
            f"{table}\n{plot}\n</body></html>\n")


def compare_runs(paths, out: str | Path = "compare.html", console: Console | None = None) -> Path:
    """Print the runs' table to the terminal, write the HTML page to ``out`` and return its path."""
    runs = load_runs(paths)
    (console or Console()).print(comparison_table(runs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(comparison_html(runs))
    return out
