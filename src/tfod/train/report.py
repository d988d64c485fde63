"""The batch-size search and the checkpoint restore as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tfod.train.batch_size import OK, Choice


def print_batch_choice(console: Console, choice: Choice) -> None:
    """Every probe (batch, outcome, peak memory, time, the fit's prediction) and the choice."""
    gb = 2**30
    source = " (cached: same model, device and target)" if choice.cached else ""
    table = Table(title=f"Batch-size probes on {choice.device}{source}")
    for column in ("batch", "result", "peak GB", "fit GB", "seconds"):
        table.add_column(column, justify="right")
    for probe in choice.probes:
        predicted = (
            (choice.fixed_bytes or 0.0) + choice.per_image_bytes * probe.batch
            if choice.per_image_bytes is not None
            else None
        )
        table.add_row(
            str(probe.batch),
            probe.status if probe.status != OK else "[green]ok[/green]",
            "" if probe.peak_bytes is None else f"{probe.peak_bytes / gb:.2f}",
            "" if predicted is None else f"{predicted / gb:.2f}",
            f"{probe.seconds:.1f}",
        )
    console.print(table)
    fit = (
        f"memory = {(choice.fixed_bytes or 0) / gb:.2f} GB + {choice.per_image_bytes / 2**20:.1f} MB x batch; "
        if choice.per_image_bytes is not None
        else ""
    )
    console.print(
        f"{fit}budget {choice.budget_bytes / gb:.1f} of {choice.total_bytes / gb:.1f} GB "
        f"-> [bold]batch {choice.batch}[/bold] (confirmed by a real step)"
    )


def print_restore(console: Console, restored: dict[str, Any], heading: str | None = None) -> None:
    """Per module: variables, restored / re-initialised / random, and why, under `heading`
    (default: where the run started from)."""
    source = restored.get("source", {})
    origin = source.get("reference") or restored["checkpoint"]
    console.print(heading or f"Started from {escape(str(origin))}:")
    table = Table()
    for column in ("module", "variables", "action", "why"):
        table.add_column(column, justify="right" if column == "variables" else "left")
    for module, row in restored["report"].items():
        action = row["action"]
        colour = "green" if action == "restored" else "yellow"
        table.add_row(
            module, str(row["variables"]), f"[{colour}]{action}[/{colour}]", row.get("why", "")
        )
    console.print(table)
    if source:
        console.print(f"  {escape(source['url'])}  sha256 {source['sha256'][:16]}...")
