"""Evaluation results as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_metrics(console: Console, row: dict[str, Any], title: str | None = None) -> None:
    """One evaluation: the COCO metrics and per-class AP side by side."""
    metrics, per_class = row["metrics"], row.get("per_class", {})
    table = Table(title=title or f"COCO metrics, step {row['step']} ({row['checkpoint']})")
    names = list(metrics)
    half = (len(names) + 1) // 2
    for _ in range(half):
        table.add_column(justify="right")
    for part in (names[:half], names[half:]):
        table.add_row(*(f"[bold]{n}[/bold]" for n in part))
        table.add_row(*(f"{metrics[n]:.3f}" for n in part))
    table.show_header = False
    console.print(table)
    if per_class:
        classes = Table(title="AP per class")
        classes.add_column("class")
        classes.add_column("AP", justify="right")
        for name, value in per_class.items():
            classes.add_row(name, "-" if value is None else f"{value:.3f}")
        console.print(classes)
