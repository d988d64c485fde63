"""The dataset summary as tables: classes per split, box sizes, image changes, problems."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tfod.data.annotations import Kind

_MAX_PROBLEM_ROWS = 12


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """Print `dataset.json`'s content as tables."""
    console.print(_split_table(summary))
    changed = summary.get("images_changed") or {}
    if changed:
        console.print("Images normalised: " + ", ".join(f"{k} x{v}" for k, v in changed.items()))
    counts = summary["problems"]["counts"]
    if not counts:
        console.print("[green]No problems found.[/green]")
    else:
        problems = Table(title=f"Problems ({sum(counts.values())})")
        problems.add_column("kind")
        problems.add_column("count", justify="right")
        problems.add_column("what tfod did")
        for kind, count in counts.items():
            problems.add_row(kind, str(count), Kind(kind).action)
        console.print(problems)
        items = summary["problems"]["items"]
        for item in items[:_MAX_PROBLEM_ROWS]:
            console.print(f"  [yellow]{item['kind']}[/yellow] {item['file']}: {item['detail']}")
        if len(items) > _MAX_PROBLEM_ROWS:
            console.print(f"  ... {len(items) - _MAX_PROBLEM_ROWS} more in dataset.json")
    console.print(f"fingerprint {summary['fingerprint']}")


def _split_table(summary: dict[str, Any]) -> Table:
    """Classes per split, then the splits' counts, box sizes and shards."""
    splits = summary["splits"]
    names = list(splits)
    table = Table(title=f"Dataset ({summary['source']['format']}, {summary['split']['method']})")
    table.add_column("class")
    table.add_column("id", justify="right")
    for split in names:
        table.add_column(f"{split} boxes", justify="right")
    for cls in summary["classes"]:
        table.add_row(
            cls["name"],
            str(cls["id"]),
            *(str(splits[s]["per_class"].get(cls["name"], 0)) for s in names),
        )
    table.add_section()
    rows = [
        ("images", "images"),
        ("images without boxes", "images_without_boxes"),
        ("boxes", "boxes"),
        ("crowd / ignored boxes", "crowd_boxes"),
    ]
    if any(splits[s].get("masks") for s in names):
        rows.append(("boxes with a mask (the rest: their box)", "masks"))
    for label, key in rows:
        table.add_row(label, "", *(str(splits[s].get(key, 0)) for s in names))
    for size in ("small", "medium", "large"):
        table.add_row(
            f"{size} boxes (COCO)", "", *(str(splits[s]["box_sizes"][size]) for s in names)
        )
    table.add_row("shards", "", *(str(len(splits[s]["shards"])) for s in names))
    return table
