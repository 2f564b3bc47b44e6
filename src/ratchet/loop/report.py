"""What a run shows its user: the terminal table (``print_summary``) and an offline HTML report
(``write_report``) with a PNG plot of every numeric metric that changes over rounds and a table of
the rounds.

Both read only the run summary (``loop.run``: ``{"rounds": [{"round", "kept", ...metrics}], "best_model",
...}``); a metric missing from some rounds is plotted where present and shown as "-" elsewhere.
A nested dict in a round (e.g. ``"bstar": {...}``) is flattened to ``bstar.<key>``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict) -> None:
    metric = summary.get("metric", "accuracy")
    table = Table(title=f"ratchet: held-out {metric} per round")
    for col in ("round", f"held-out {metric}", "pass@1 (samples)", "pass@k", "balance", "pairs", "train loss", "kept"):
        table.add_column(col, justify="right")
    for r in summary["rounds"]:
        fmt = lambda k, f="{:.3f}": f.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        table.add_row(str(r["round"]), fmt(metric), fmt("pass_at_1"), fmt("pass_at_k"), fmt("balance_score"),
                      fmt("pairs_kept", "{}"),
                      fmt("train_loss", "{:.4f}"), "yes" if r.get("kept") else "no (rolled back)")
    Console().print(table)


def _flatten(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # drops NaN


def _numeric_metrics(rounds: list[dict]) -> list[str]:
    """Keys with a number in at least one round, in first-seen order, except ``round`` itself and
    settings that hold one value in every round (``k``, ``n``, a fixed temperature): a flat line
    says nothing the table does not."""
    values: dict[str, list] = {}
    for r in rounds:
        for k, v in r.items():
            if k != "round" and _is_number(v):
                values.setdefault(k, []).append(v)
    return [k for k, vs in values.items() if len(vs) == 1 or len(set(vs)) > 1]


def _plot(rounds: list[dict], metric: str, path: Path) -> None:
    from matplotlib.figure import Figure  # lazily: matplotlib is the optional [plot] extra

    points = [(r.get("round", i), r[metric], r.get("kept", True)) for i, r in enumerate(rounds)
              if _is_number(r.get(metric))]
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.subplots()
    ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "-o", color="tab:blue", label="all rounds")
    dropped = [(x, y) for x, y, kept in points if not kept]
    if dropped:
        ax.plot(*zip(*dropped), "x", color="tab:red", markersize=10, label="rolled back")
        ax.legend()
    ax.set_xlabel("round")
    ax.set_title(metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return html.escape(json.dumps(value))
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>\n" for r in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{margin:4px}")


def write_report(run_dir: Path, summary: dict) -> Path:
    """Write ``run_dir/report.html``, its plots as ``run_dir/plots/<metric>.png`` (referenced by
    relative path, so the folder reads offline) and return the HTML's path. Without matplotlib
    the report has the tables and says why it has no plots."""
    run_dir = Path(run_dir)
    rounds = [_flatten(r) for r in summary.get("rounds", [])]
    metrics = _numeric_metrics(rounds)
    figures, note = [], ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = "<p>No plots: matplotlib is not installed (<code>pip install 'ratchet[plot]'</code>).</p>"
    else:
        (run_dir / "plots").mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "plots").glob("*.png"):  # a regenerated report keeps no old plots
            stale.unlink()
        for metric in metrics:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", metric) + ".png"
            _plot(rounds, metric, run_dir / "plots" / name)
            figures.append(f'<img src="plots/{html.escape(name)}" alt="{html.escape(metric)}">')
    run_info = {k: v for k, v in summary.items() if k != "rounds"}
    columns = ["round"] + [k for k in dict.fromkeys(k for r in rounds for k in r) if k != "round"]
    parts = [
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>ratchet report</title>"
        f"<style>{_STYLE}</style></head><body>",
        "<h1>ratchet report</h1>",
        _table([run_info], list(run_info)) if run_info else "",
        "<h2>Metrics over rounds</h2>", note, "\n".join(figures),
        "<h2>Rounds</h2>", _table(rounds, columns),
        "</body></html>\n",
    ]
    out = run_dir / "report.html"
    out.write_text("\n".join(parts))
    return out
