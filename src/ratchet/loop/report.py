"""What a run shows its user: the terminal table (``print_summary``) and an offline HTML report
(``write_report``) that explains each round, not only scores it:

    run info         the summary's run-level keys (best model, metric start and best, gate, seed, threads)
    warnings         rounds where many answers were cut by the token budget (a common cause of collapse)
    metrics          a PNG plot of every numeric metric that changes over rounds
    answers          per round, for the samples (``round_<r>/completions.jsonl``, or an on-policy round's
                     ``train/rollouts.jsonl``) and the greedy held-out answers (``round_<r>/eval/answers.jsonl``,
                     round 0 too): count, mean length in tokens, the token budget, and the share of finish
                     reasons (ended = eos, stop string = stop, cut by the budget = length); a plot of each of
                     these that changes over rounds
    side by side     a few held-out problems (those whose verdict or finish reason changes first): the prompt
                     and each round's greedy answer with its length, finish reason and verdict
                     (``round_<r>/eval/judgments.jsonl``: ``correct[0]``, else ``scores[0]``)
    per revision     with ``revise.revisions``: each round's held-out metric at every revision step
                     (``revision_<k>``; ``goal.revision_<k>`` with a reward-augmented goal), the step
                     the gate read (``gated.*``), and a plot of the metric against the revision, a line per round
    rounds           a table of every round's metrics, with the held-out metric's 95% interval
                     (``interval``) and the gate's record (``gate.*``: rule, compared-with round, delta,
                     p-value, decision)

The held-out metric's plot has interval bars (``evaluate.metrics.metric_interval``, the function
``ratchet compare`` uses too), as does the terminal table's metric column. The metrics come from
the run summary (``loop.run``: ``{"rounds": [{"round", "kept", ...metrics}], "best_model", ...}``); a
metric missing from some rounds is plotted where present and shown as "-" elsewhere. A nested dict
in a round (e.g. ``"bstar": {...}``) is flattened to ``bstar.<key>``.
The round files are optional: a missing file leaves its row or section out, and unreadable lines are
skipped and counted, so a report is written for any run, finished or not. Plots are PNG files under
``<run>/plots/`` referenced by relative path, so the folder reads offline.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ratchet.evaluate.metrics import metric_interval


def value_cell(value: float | None, interval: tuple[float, float] | None) -> str:
    """A held-out value as the tables print it: ``0.430 [0.363, 0.499]``, without the interval
    where there is none, ``-`` without a value (this table and ``ratchet compare``'s)."""
    if value is None:
        return "-"
    return f"{value:.3f}" if interval is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _gate_p(r: dict) -> str:
    p = (r.get("gate") or {}).get("p_value")
    return f"{p:.3g}" if _is_number(p) else "-"


def print_summary(summary: dict) -> None:
    metric = summary.get("metric", "accuracy")
    gated = any("gated" in r for r in summary["rounds"])  # the gate read a revision or a goal-conditioned answer
    agree = any(r.get("judge_agreement") is not None for r in summary["rounds"])  # a self-judge, verified
    table = Table(title=f"ratchet: held-out {metric} per round", caption="[95% interval]; pass@1, pass@k: the "
                  "round's samples; gate p: one-sided p-value of the gain over the best round so far (paired)"
                  + ("; per revision: revision 0 (the draft), 1, ...; gated: the value the gate read" if gated else "")
                  + ("; judge pick: how often the judge's top sample is verified correct (its gain over pass@1)"
                     if agree else ""))
    for col in ("round", f"held-out {metric}") + (("per revision", "gated") if gated else ()) + (
            "pass@1", "pass@k") + (("judge pick",) if agree else ()) + ("balance", "pairs", "train loss", "gate p",
                                                                         "kept"):
        table.add_column(col, justify="right", no_wrap=col.startswith("held-out"))  # the value [interval] whole
    for r in summary["rounds"]:
        fmt = lambda k, f="{:.3f}": f.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        value = r.get(metric) if _is_number(r.get(metric)) else None
        extra = (_per_revision_cell(r), _gated_cell(r)) if gated else ()
        pick = (_judge_pick_cell(r),) if agree else ()
        table.add_row(str(r["round"]), value_cell(value, metric_interval({**r, "metric": metric})), *extra,
                      fmt("pass_at_1"), fmt("pass_at_k"), *pick, fmt("balance_score"), fmt("pairs_kept", "{}"),
                      fmt("train_loss", "{:.4f}"), _gate_p(r), "yes" if r.get("kept") else "no")
    Console().print(table)


def _judge_pick_cell(r: dict) -> str:
    """``0.667 (+0.250)``: ``judge_agreement`` and ``judge_pick_vs_random`` (evaluate.bstar)."""
    agreement, gain = r.get("judge_agreement"), r.get("judge_pick_vs_random")
    return "-" if not _is_number(agreement) else f"{agreement:.3f}" + (f" ({gain:+.3f})" if _is_number(gain) else "")


def _per_revision_cell(r: dict) -> str:
    """``0.330 0.310 0.350``: the held-out metric at revision 0, 1, ... (SRPO's inference)."""
    steps = sorted((int(k.removeprefix("revision_")), v) for k, v in r.items()
                   if re.fullmatch(r"revision_\d+", k) and _is_number(v))
    return " ".join(f"{v:.3f}" for _, v in steps) or "-"


def _gated_cell(r: dict) -> str:
    """``0.350 r2`` (revision 2), ``0.400 goal r0`` (asked with the reward-augmented goal)."""
    g = r.get("gated")
    goal = " goal" if g and g["eval"].endswith("_goal") else ""
    return f"{g['value']:.3f}{goal} r{g['revision']}" if g else "-"


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


_NOT_PLOTTED = ("round", "gate.compared_with", "gate.n_paired")
"""Numbers that are round numbers or counts of the comparison, not metrics."""


def _numeric_metrics(rounds: list[dict]) -> list[str]:
    """Keys with a number in at least one round, in first-seen order, except ``_NOT_PLOTTED`` and
    settings that hold one value in every round (``k``, ``n``, a fixed temperature): a flat line
    says nothing the table does not."""
    values: dict[str, list] = {}
    for r in rounds:
        for k, v in r.items():
            if k not in _NOT_PLOTTED and _is_number(v):
                values.setdefault(k, []).append(v)
    return [k for k, vs in values.items() if len(vs) == 1 or len(set(vs)) > 1]


def _plot(rounds: list[dict], metric: str, path: Path) -> None:
    from matplotlib.figure import Figure  # lazily: matplotlib is the optional [plot] extra

    points = [(r.get("round", i), r[metric], r.get("kept", True)) for i, r in enumerate(rounds)
              if _is_number(r.get(metric))]
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.subplots()
    intervals = [metric_interval(r) if r.get("metric", "accuracy") == metric else None for r in rounds
                 if _is_number(r.get(metric))]
    err = [[max(0.0, y - iv[0]) if iv else 0 for (_, y, _), iv in zip(points, intervals)],
           [max(0.0, iv[1] - y) if iv else 0 for (_, y, _), iv in zip(points, intervals)]]
    if any(intervals):  # the held-out metric: its 95% interval as bars
        ax.errorbar([x for x, _, _ in points], [y for _, y, _ in points], yerr=err, fmt="-o", capsize=3,
                    color="tab:blue", label="all rounds (95% interval)")
    else:
        ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "-o", color="tab:blue", label="all rounds")
    dropped = [(x, y) for x, y, kept in points if not kept]
    if dropped:
        ax.plot(*zip(*dropped), "x", color="tab:red", markersize=10, label="rolled back")
        ax.legend()
    _save_round_plot(fig, ax, metric, path)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):  # an interval
        return html.escape("[" + ", ".join(f"{v:.4g}" for v in value) + "]")
    if isinstance(value, (list, tuple, dict)):
        return html.escape(json.dumps(value))
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>\n" for r in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


FINISH_REASONS = (("eos", "ended"), ("stop", "stop string"), ("length", "cut by the budget"))
"""A completion's ``finish_reason`` and how the report names it."""
CUT_WARNING = 0.25
"""A share of answers cut by the token budget at or above this is flagged in the report."""
SIDE_BY_SIDE = 5
"""How many held-out problems the side-by-side section shows."""


def _read_rows(path: Path) -> tuple[list[dict], int]:
    """The JSON rows of ``path`` (none if it is missing) and the count of unreadable lines, which
    are skipped: a report is a diagnosis and must not fail on the file it diagnoses."""
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def _completions(row: dict) -> list[dict]:
    return [c for c in row.get("completions") or [] if isinstance(c, dict)]


def answer_stats(rows: list[dict]) -> dict | None:
    """Count, mean length in tokens, token budget and finish reasons of every completion in the
    rows (``{"answers", "mean_tokens", "budget", "eos", "stop", "length", "other"}``); None when
    there is no completion. ``mean_tokens`` and ``budget`` are None where the rows lack them."""
    completions = [c for row in rows for c in _completions(row)]
    if not completions:
        return None
    tokens = [c["num_tokens"] for c in completions if _is_number(c.get("num_tokens"))]
    reasons = Counter(c.get("finish_reason") for c in completions)
    budget = next((row["sampling"].get("max_new_tokens") for row in rows
                   if isinstance(row.get("sampling"), dict) and _is_number(row["sampling"].get("max_new_tokens"))),
                  None)
    stats = {"answers": len(completions), "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
             "budget": budget}
    stats.update({reason: reasons.get(reason, 0) for reason, _ in FINISH_REASONS})
    stats["other"] = len(completions) - sum(stats[reason] for reason, _ in FINISH_REASONS)
    return stats


class _RoundFiles:
    """The answer files of one run, each read once: samples and held-out answers per round."""

    def __init__(self, run_dir: Path, round_numbers: list[int]):
        self.samples, self.heldout, self.judgments, self.bad = {}, {}, {}, {}
        for r in round_numbers:
            d = run_dir / f"round_{r}"
            for kind, path in (("samples", d / "completions.jsonl"), ("samples", d / "train" / "rollouts.jsonl"),
                               ("held-out", d / "eval" / "answers.jsonl")):
                target = self.samples if kind == "samples" else self.heldout
                if r in target or not path.is_file():
                    continue
                rows, bad = _read_rows(path)
                target[r] = (path.relative_to(run_dir).as_posix(), rows)
                self.bad[(r, kind)] = bad
            self.judgments[r] = {row.get("id"): row for row in _read_rows(d / "eval" / "judgments.jsonl")[0]}


def _answer_rows(files: _RoundFiles, round_numbers: list[int]) -> list[dict]:
    out = []
    for r in round_numbers:
        for kind, source in (("samples", files.samples), ("held-out", files.heldout)):
            if r not in source:
                continue
            path, rows = source[r]
            stats = answer_stats(rows)
            if stats is None and not files.bad.get((r, kind)):
                continue
            out.append({"round": r, "kind": kind, "file": path, "stats": stats, "bad": files.bad.get((r, kind), 0)})
    return out


def _share_cell(count: int, total: int, warn: bool = False) -> str:
    cls = " class='warn'" if warn and count and count / total >= CUT_WARNING else ""
    return f"<td{cls}>{100 * count / total:.0f}% ({count})</td>"


def _answers_table(rows: list[dict]) -> str:
    head = ("<tr><th>round</th><th>answers</th><th>file</th><th>count</th><th>mean length (tokens)</th>"
            "<th>token budget</th>" + "".join(f"<th>{label}</th>" for _, label in FINISH_REASONS) +
            "<th>other</th></tr>")
    body = []
    for row in rows:
        s = row["stats"]
        note = f" ({row['bad']} unreadable lines skipped)" if row["bad"] else ""
        cells = [f"<td>{row['round']}</td>", f"<td>{row['kind']}</td>",
                 f"<td><code>{html.escape(row['file'])}</code>{note}</td>"]
        if s is None:
            cells.append("<td colspan='7'>no completions</td>")
        else:
            n = s["answers"]
            cells += [f"<td>{n}</td>", f"<td>{_cell(s['mean_tokens'])}</td>", f"<td>{_cell(s['budget'])}</td>"]
            cells += [_share_cell(s[reason], n, warn=reason == "length") for reason, _ in FINISH_REASONS]
            cells.append(f"<td>{s['other']}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table class='answers'>\n" + head + "\n" + "\n".join(body) + "\n</table>"


CUT_ADVICE = ("Where a DPO-family round made the answers run on (a calculation repeated until the budget), "
              "<code>train.loss={name: dpop}</code> keeps the chosen answers' likelihood from falling "
              "(docs/evidence.md: 4-29 answers of 100 cut per round over three DPO rounds, 0-5 with DPOP); "
              "<code>pair.drop_truncated</code> (on by default) keeps cut samples out of pairs.")


def _cut_warnings(rows: list[dict]) -> list[str]:
    notes = []
    for row in rows:
        s = row["stats"]
        if s and s["length"] and s["length"] / s["answers"] >= CUT_WARNING:
            budget = f" ({s['budget']} tokens)" if s["budget"] is not None else ""
            notes.append(f"round {row['round']}: {s['length']} of {s['answers']} {row['kind']} answers "
                         f"({100 * s['length'] / s['answers']:.0f}%) were cut by the token budget{budget}")
    return notes


_ANSWER_PLOTS = (("mean_tokens", "mean answer length (tokens)"),
                 ("eos", "share ended (eos)"), ("stop", "share ended by a stop string"),
                 ("length", "share cut by the token budget"))


def _answer_series(rows: list[dict], key: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        s = row["stats"]
        if not s:
            continue
        value = s["mean_tokens"] if key == "mean_tokens" else s[key] / s["answers"]
        if value is not None:
            series.setdefault(row["kind"], []).append((row["round"], value))
    return series


def _plot_series(series: dict[str, list[tuple[int, float]]], title: str, dropped: set[int], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.subplots()
    for label, points in series.items():
        ax.plot([x for x, _ in points], [y for _, y in points], "-o", label=label)
    marks = [(x, y) for points in series.values() for x, y in points if x in dropped]
    if marks:
        ax.plot(*zip(*marks), "x", color="tab:red", markersize=10, label="rolled back")
    ax.legend()
    _save_round_plot(fig, ax, title, path)


def _save_round_plot(fig, ax, title: str, path: Path) -> None:
    """The finish every per-round plot shares: round numbers on x, a title, a light grid, PNG."""
    ax.set_xlabel("round")
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _revision_key(key: str) -> tuple[bool, int] | None:
    """(goal-conditioned?, k) of a ``revision_<k>`` or ``goal.revision_<k>`` column, else None."""
    match = re.fullmatch(r"(goal\.)?revision_(\d+)", key)
    return (bool(match.group(1)), int(match.group(2))) if match else None


def _revision_section(rounds: list[dict], metric: str, run_dir: Path, plots: bool) -> str:
    """The per-revision table (and plot, with ``plots``) of flattened round rows; "" without revisions."""
    keys = sorted({k for r in rounds for k in r if _revision_key(k)}, key=_revision_key)
    if not keys:
        return ""
    parts = ["<h2>Held-out metric per revision</h2>",
             f"<p>{html.escape(metric)} of the greedy draft (revision 0) and of each of the model's revisions of its "
             "own answer (SRPO's inference); goal.*: asked with the goal it was trained with (reward-augmented "
             "pairs); gated.*: the evaluation and revision the gate compared (<code>evaluate.gate_on</code>).</p>",
             _table(rounds, ["round"] + keys + [k for k in ("gated.eval", "gated.revision")
                                                if any(k in r for r in rounds)])]
    plain = [k for k in keys if not _revision_key(k)[0]] or keys
    series = {f"round {r.get('round', i)}": [r[k] for k in plain] for i, r in enumerate(rounds)
              if all(_is_number(r.get(k)) for k in plain)}
    if plots and series:
        from ratchet.evaluate.revisions import plot_revisions

        plot_revisions(series, run_dir / "plots" / "revisions.png", ylabel=metric,
                       title=f"held-out {metric} per revision")
        parts.append('<img src="plots/revisions.png" alt="held-out metric per revision">')
    return "\n".join(parts)


def _changes(series: dict[str, list[tuple[int, float]]]) -> bool:
    return any(len({round(y, 9) for _, y in points}) > 1 for points in series.values())


def _verdict(judgment: dict | None) -> str:
    if not judgment:
        return ""
    correct, scores = judgment.get("correct") or [None], judgment.get("scores") or [None]
    if isinstance(correct[0], bool):
        return "correct" if correct[0] else "wrong"
    if _is_number(scores[0]):
        return f"score {scores[0]:.3g}"
    return "no verdict"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" … ({len(text) - limit} more characters)"


def _prompt_html(row: dict) -> str:
    messages = [m for m in row.get("messages") or [] if isinstance(m, dict)]
    if not messages:
        return "<pre class='prompt'>(no messages)</pre>"
    if len(messages) == 1:
        return f"<pre class='prompt'>{html.escape(_clip(str(messages[0].get('content', '')), 2000))}</pre>"
    return "".join(f"<pre class='prompt'><b>{html.escape(str(m.get('role', '?')))}:</b> "
                   f"{html.escape(_clip(str(m.get('content', '')), 2000))}</pre>" for m in messages)


def _side_by_side(files: _RoundFiles, round_numbers: list[int], kept: dict[int, bool], k: int = SIDE_BY_SIDE) -> str:
    rounds = [r for r in round_numbers if r in files.heldout]
    if not rounds:
        return ""
    by_round = {r: {row.get("id"): row for row in files.heldout[r][1]} for r in rounds}
    ids = list(dict.fromkeys(row.get("id") for row in files.heldout[rounds[0]][1] if row.get("id") is not None))

    def first(r, pid):
        comps = _completions(by_round[r].get(pid) or {})
        return comps[0] if comps else None

    def trace(pid):
        return [(_verdict(files.judgments[r].get(pid)), (first(r, pid) or {}).get("finish_reason")) for r in rounds]

    # problems whose verdict or finish reason changes between rounds say the most; then any cut answer
    ranked = sorted(range(len(ids)), key=lambda i: (len(set(trace(ids[i]))) <= 1,
                                                     all(reason != "length" for _, reason in trace(ids[i])), i))
    chosen = [ids[i] for i in ranked[:k]]
    label = {"eos": "ended", "stop": "stop string", "length": "cut by the budget"}
    parts = [f"<p>{len(chosen)} of {len(ids)} held-out problems, those whose verdict or finish reason changes "
             "between rounds first; each round's greedy answer.</p>"]
    head = "".join(f"<th>round {r}{' (base)' if r == 0 else ''}{' (rolled back)' if kept.get(r) is False else ''}"
                   f"</th>" for r in rounds)
    for pid in chosen:
        row0 = by_round[rounds[0]][pid]
        ref = row0.get("answer")
        ref_html = (f"<p class='ref'>reference answer: <code>{html.escape(_clip(str(ref), 300))}</code></p>"
                    if isinstance(ref, (str, int, float)) and not isinstance(ref, bool) else "")
        cells = []
        for r in rounds:
            c = first(r, pid)
            if c is None:
                cells.append("<td class='answer'>-</td>")
                continue
            verdict = _verdict(files.judgments[r].get(pid))
            meta = ", ".join(x for x in (f"{c['num_tokens']} tokens" if _is_number(c.get("num_tokens")) else "",
                                         label.get(c.get("finish_reason"), str(c.get("finish_reason"))),
                                         verdict) if x)
            cls = " verdict-ok" if verdict == "correct" else " verdict-bad" if verdict == "wrong" else ""
            cells.append(f"<td class='answer{cls}'><pre>{html.escape(_clip(str(c.get('text', '')), 1500))}</pre>"
                         f"<div class='meta'>{html.escape(meta)}</div></td>")
        parts.append(f"<h3>{html.escape(str(pid))}</h3>{_prompt_html(row0)}{ref_html}"
                     f"<div class='scroll'><table class='sxs'><tr>{head}</tr><tr>{''.join(cells)}</tr></table></div>")
    return "\n".join(parts)


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{margin:4px}"
          ".warn{background:#fde2e1;color:#8a1f11}div.warn{padding:6px 12px;border:1px solid #e0a8a3}"
          "pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:90%}"
          "pre.prompt{background:#f4f4f4;padding:6px;margin:4px 0}"
          "div.scroll{overflow-x:auto}table.sxs{table-layout:fixed;width:100%}"
          "table.sxs th{text-align:left}table.sxs td{text-align:left;vertical-align:top;min-width:14em}"
          "td.verdict-ok{background:#e6f4e6}td.verdict-bad{background:#fbecec}"
          ".meta{color:#555;font-size:85%;margin-top:4px}p.ref{margin:2px 0}table.answers td{white-space:nowrap}")


def _png_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".png"


def write_report(run_dir: Path, summary: dict) -> Path:
    """Write ``run_dir/report.html``, its plots as ``run_dir/plots/<name>.png`` (referenced by
    relative path, so the folder reads offline) and return the HTML's path. Without matplotlib
    the report has the tables and says why it has no plots."""
    run_dir = Path(run_dir)
    rounds = [_flatten(r) for r in summary.get("rounds", [])]
    metrics = _numeric_metrics(rounds)
    round_numbers = [r.get("round", i) for i, r in enumerate(rounds)]
    kept = {r.get("round", i): r.get("kept") for i, r in enumerate(rounds)}
    files = _RoundFiles(run_dir, round_numbers)
    answer_rows = _answer_rows(files, round_numbers)
    answer_plots = [(key, title, series) for key, title in _ANSWER_PLOTS
                    if _changes(series := _answer_series(answer_rows, key))]
    figures, answer_figures, note = [], [], ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = "<p>No plots: matplotlib is not installed (<code>pip install 'ratchet[plot]'</code>).</p>"
    else:
        (run_dir / "plots").mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "plots").glob("*.png"):  # a regenerated report keeps no old plots
            stale.unlink()
        for metric in metrics:
            name = _png_name(metric)
            _plot(rounds, metric, run_dir / "plots" / name)
            figures.append(f'<img src="plots/{html.escape(name)}" alt="{html.escape(metric)}">')
        dropped = {r for r, k in kept.items() if k is False}
        for key, title, series in answer_plots:
            name = _png_name(f"answers-{key}")
            _plot_series(series, title, dropped, run_dir / "plots" / name)
            answer_figures.append(f'<img src="plots/{html.escape(name)}" alt="{html.escape(title)}">')
    run_info = {k: v for k, v in summary.items() if k != "rounds"}
    columns = ["round"] + [k for k in dict.fromkeys(k for r in rounds for k in r) if k != "round"]
    warnings = _cut_warnings(answer_rows)
    answers = []
    if answer_rows:
        answers = ["<h2>Answers per round: length and how they ended</h2>",
                   "<p>ended: the model stopped (eos); stop string: a task stop string ended it; cut by the budget: "
                   "it reached the token budget (max_new_tokens) unfinished. Samples are the round's training "
                   "samples, held-out the greedy answers its metric is computed from.</p>",
                   _answers_table(answer_rows), note if answer_plots else "", "\n".join(answer_figures)]
    side_by_side = _side_by_side(files, round_numbers, kept)
    per_revision = _revision_section(rounds, summary.get("metric", "accuracy"), run_dir, plots=not note)
    parts = [
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>ratchet report</title>"
        f"<style>{_STYLE}</style></head><body>",
        "<h1>ratchet report</h1>",
        _table([run_info], list(run_info)) if run_info else "",
        ("<div class='warn'><b>Cut by the token budget</b><ul>"
         + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + f"</ul><p>{CUT_ADVICE}</p></div>")
        if warnings else "",
        "<h2>Metrics over rounds</h2>", note, "\n".join(figures),
        *answers,
        ("<h2>Held-out answers side by side</h2>\n" + side_by_side) if side_by_side else "",
        per_revision,
        "<h2>Rounds</h2>", _table(rounds, columns),
        "</body></html>\n",
    ]
    out = run_dir / "report.html"
    out.write_text("\n".join(parts))
    return out
