"""Tables for `tfod export` and `tfod verify`."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tfod.export.verify import Verified, per_class_delta_ap


def _size(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f} ms"


def print_export(console: Console, manifest: dict[str, Any]) -> None:
    """The artefacts of an export."""
    checkpoint = manifest["checkpoint"]
    table = Table(
        title=f"Exported {manifest['run']} step {checkpoint['step']} ({checkpoint['which']})"
    )
    for column in ("artefact", "format", "quantization", "size", "input", "seconds"):
        table.add_column(column, justify="left" if column in ("artefact", "format") else "right")
    for item in manifest["artefacts"]:
        shape = item.get("input", {}).get("shape")
        dtype = item.get("input", {}).get("dtype", "float32")
        method = {"quantization-aware training": " QAT", "post-training": " PTQ"}
        table.add_row(
            item["file"], item["format"],
            item["quantization"] + method.get(item.get("method", ""), ""), _size(item["bytes"]),
            ("x".join("?" if s is None else str(s) for s in shape) + f" {dtype}") if shape else "—",
            str(item.get("seconds", "—")),
        )  # fmt: skip
    console.print(table)
    tpu = manifest.get("edgetpu") or {}
    if tpu.get("tpu_ops") is not None:
        console.print(
            f"Edge TPU: {tpu['tpu_ops']} ops on the TPU, {tpu['cpu_ops']} on the CPU "
            f"({tpu['compiler']})."
        )
    elif tpu.get("error"):
        console.print(f"[yellow]Edge TPU: {tpu['error']}[/yellow]")


def print_verification(console: Console, rows: list[Verified], images: int) -> None:
    """Artefact, size, AP, AP50, ΔAP vs the float checkpoint, latency and speed-up."""
    table = Table(title=f"Verification on {images} validation images (batch 1, this machine)")
    table.add_column("artefact", no_wrap=True)
    for column in ("size", "AP", "AP50", "ΔAP", "latency", "invoke", "speed-up"):
        table.add_column(column, justify="right")
    for row in rows:
        delta = "ref" if row is rows[0] else _num(row.delta_ap, "+.3f")
        table.add_row(
            escape(row.name) + (f" [dim]({escape(row.note)})[/dim]" if row.note else ""),
            _size(row.bytes), _num(row.ap, ".3f"), _num(row.ap50, ".3f"), delta,
            _ms(row.latency_ms), _ms(row.invoke_ms),
            _num(row.speedup, ".2f") + "x" if not math.isnan(row.speedup) else "—",
        )  # fmt: skip
    console.print(table)
    console.print(
        "[dim]Medians at batch 1 over the validation images. latency: image in, detections out "
        "(resize, normalise, network, NMS, boxes mapped back); invoke: the model call alone "
        "(the SavedModel resizes inside it). ΔAP and speed-up (of latency) against the float "
        "checkpoint.[/dim]"
    )


def print_per_class(console: Console, rows: list[Verified]) -> None:
    """AP per class of the reference, and each artefact's change of it; the worst in red."""
    deltas = per_class_delta_ap(rows)
    if not deltas:
        return
    table = Table(title=f"AP per class: {escape(rows[0].name)}, and each artefact's ΔAP")
    table.add_column("class", no_wrap=True)
    table.add_column("AP", justify="right")
    for name in deltas:
        table.add_column(escape(name), justify="right")
    for cls, ap in rows[0].per_class.items():
        cells = []
        for change in deltas.values():
            value = change.get(cls)
            text = "—" if value is None else f"{value:+.3f}"
            cells.append(f"[red]{text}[/red]" if value is not None and value < -0.05 else text)
        table.add_row(escape(cls), "—" if ap is None else f"{ap:.3f}", *cells)
    console.print(table)
