"""Metrics per revision step of SRPO's revision loop: accuracy, win-rate against gold, a plot.

Input rows are the output of ``generate.revise``: a prompt record plus ``answers`` (the draft and
its N revisions). Step k's metric is over every row's ``answers[k]``. Verifiable tasks (the
``arithmetic`` task, math) use a ``Judge``'s ``correct`` verdicts; open-ended ones compare each
answer with the row's gold answer through a pairwise LLM judge (the paper's "win-rate against GOLD",
``docs/algorithms.md#srpo-reported``). This module knows nothing of sampling or models: judges are passed in.
"""

from __future__ import annotations

from pathlib import Path

from ratchet.evaluate.metrics import WinRate, accuracy, win_rate
from ratchet.judge.base import Judge, Judgment
from ratchet.judge.prompt import question_text


def _steps(rows: list[dict]) -> int:
    if not rows:
        raise ValueError("no rows to evaluate")
    counts = {len(r.get("answers") or []) for r in rows}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every row needs the same non-empty 'answers' list (draft + revisions); "
                         f"got lengths {sorted(counts)}")
    return counts.pop()


def judge_revisions(rows: list[dict], judge: Judge) -> list[list[Judgment]]:
    """Per row, the judge's verdict on each of its answers (one ``judge`` call per row)."""
    _steps(rows)
    return [judge.judge(row, row["answers"]) for row in rows]


def score_revisions(rows: list[dict], judge: Judge) -> list[float]:
    """Accuracy at each revision step (index 0 is the draft), from the judge's ``correct``; answers
    without a verdict (``None``) are left out, as in ``metrics.accuracy``."""
    verdicts = judge_revisions(rows, judge)
    out = []
    for k in range(len(rows[0]["answers"])):
        step = [v[k].correct for v in verdicts]
        if all(c is None for c in step):
            raise ValueError(f"the judge gave no correct/incorrect verdict at revision {k}; it is not a "
                             "verifier (use win_rates_vs_gold for preference judges)")
        out.append(accuracy(step))
    return out


def win_rates_vs_gold(rows: list[dict], pairwise_judge, *, gold_key: str = "answer", confidence: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> list[WinRate]:
    """Win-rate of each revision step's answers against the rows' gold answers (``row[gold_key]``),
    with a bootstrap interval. ``pairwise_judge`` is a ``judge.llm_judge.PairwiseJudge`` (anything
    with its ``compare(question, pairs)``): both orders per comparison, ties and disagreements 0.5.
    One ``compare`` call per row, holding all its steps."""
    steps = _steps(rows)
    missing = [r.get("id", i) for i, r in enumerate(rows) if not isinstance(r.get(gold_key), str)]
    if missing:
        raise ValueError(f"row(s) {missing[:5]} have no gold answer {gold_key!r} (a string)")
    outcomes = [pairwise_judge.compare(question_text(r), [(a, r[gold_key]) for a in r["answers"]]) for r in rows]
    return [win_rate([o[k] for o in outcomes], confidence=confidence, n_boot=n_boot, seed=seed)
            for k in range(steps)]


def plot_revisions(series: dict[str, list[float]], path: str | Path, *, ylabel: str = "accuracy",
                   title: str | None = None) -> Path:
    """A PNG of each named series (e.g. ``{"srpo": [...], "dpo": [...]}``) against the revision number
    (0 is the draft). Needs matplotlib (the ``plot`` extra); draws off-screen (Agg), no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: optional [plot] extra
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("plot_revisions needs at least one series")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(range(len(values)), values, "-o", label=name)
    ax.set_xlabel("revision (0 = draft)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
