"""The terminal summary of a run (a rich table, one row per round)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict) -> None:
    table = Table(title="ratchet: held-out accuracy per round")
    for col in ("round", "held-out accuracy", "sample accuracy", "pairs", "train loss", "kept"):
        table.add_column(col, justify="right")
    for r in summary["rounds"]:
        fmt = lambda k, f="{:.3f}": f.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        table.add_row(str(r["round"]), fmt("accuracy"), fmt("sample_accuracy"), fmt("pairs", "{}"),
                      fmt("train_loss", "{:.4f}"), "yes" if r.get("kept") else "no (rolled back)")
    Console().print(table)
