"""`tfod import pipeline`'s table: every field of the pipeline.config and what it became."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from tfod.odapi.mapper import APPROXIMATED, MAPPED, TO_DO, UNSUPPORTED

if TYPE_CHECKING:
    from rich.console import Console

    from tfod.odapi.pipeline import PipelineImport

STYLES = {MAPPED: "green", APPROXIMATED: "yellow", UNSUPPORTED: "red", TO_DO: "bold magenta"}


def print_import(console: Console, result: PipelineImport) -> None:
    """The field table, the counts per status, the dataset and the next commands."""
    table = Table(title="pipeline.config -> tfod.yaml", show_lines=False, expand=True)
    table.add_column("field (as in the file)", overflow="fold", ratio=3)
    table.add_column("value", overflow="fold", ratio=2)
    table.add_column("status", no_wrap=True)
    table.add_column("became / why", overflow="fold", ratio=4)
    for row in result.rows:
        style = STYLES[row.status]
        said = "; ".join(part for part in (row.became, row.why) if part)
        table.add_row(
            escape(row.field), escape(row.value), f"[{style}]{row.status}[/{style}]", escape(said)
        )
    console.print(table)
    counts = Counter(row.status for row in result.rows)
    console.print(
        ", ".join(
            f"[{STYLES[s]}]{counts.get(s, 0)} {s}[/{STYLES[s]}]"
            for s in (MAPPED, APPROXIMATED, UNSUPPORTED, TO_DO)
        )
    )
    if result.dataset is not None:
        splits = result.dataset["splits"]
        console.print(
            f"Imported the records into [bold]{escape(str(result.data_dir))}[/bold]: "
            f"{splits['train']['images']} train / {splits['val']['images']} val images, "
            f"{sum(result.dataset['problems']['counts'].values())} problem(s) reported"
        )
    console.print("Next:")
    for step in result.next_steps:
        console.print(f"  {escape(step)}")
