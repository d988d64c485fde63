"""Detector families side by side: AP per minute of training and the exported model's latency.

Usage: python bench/families_bench.py [--budgets 5m,10m] [--presets P1,P2] [--datasets clutter,large]
[--images 240]

Each preset is trained from scratch with `tfod init`'s defaults for each wall-clock budget on the
accuracy bench's generated datasets (`bench/accuracy_bench.py`), then its longest run is exported
(TFLite fp32 and post-training int8 where its family exports TFLite, else the SavedModel) and
verified on the validation split: batch-1 latency on one thread, image in, detections out. One
process, one machine, one table, so the rows compare.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from accuracy_bench import DATASETS, bench_one, make_dataset
from rich.console import Console
from rich.table import Table

from tfod.config.presets import get_preset
from tfod.export.exporter import FAMILY_FORMATS, export
from tfod.export.verify import verify
from tfod.runs.rundir import RunDir

PRESETS = ("retinanet-mobilenetv2-320", "yolov7-tiny-416", "fasterrcnn-resnet50-fpn-640")


def deployed(run: RunDir) -> dict[str, Any]:
    """AP and latency of `run`'s best checkpoint exported as its family ships it."""
    if "tflite" in FAMILY_FORMATS[get_preset(run.read()["plan"]["preset"]).family]:
        export(run, formats=["tflite"], quants=["fp32", "int8"])
        names = {"fp32": "model_fp32.tflite", "int8": "model_int8.tflite"}
    else:
        export(run, formats=["saved_model"])
        names = {"fp32": "saved_model"}
    rows, _ = verify(run)
    by_name = {row.name: row for row in rows}
    return {
        quant: {"AP": by_name[name].ap, "ms": by_name[name].latency_ms}
        for quant, name in names.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5m,10m")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--images", type=int, default=240)
    args = parser.parse_args()
    console = Console(width=160)
    budgets = args.budgets.split(",")
    table = Table(title=f"Detector families from scratch, {os.cpu_count()} cores")
    columns = [
        "dataset",
        "preset",
        "budget",
        "steps",
        "AP",
        "AP50",
        "fp32 ms",
        "int8 ms",
        "int8 AP",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="tfod-families-bench-") as tmp:
        root = Path(tmp)
        for dataset in args.datasets.split(","):
            data = make_dataset(root, dataset, args.images)
            for preset in args.presets.split(","):
                for budget in budgets:
                    result = bench_one(data, preset, budget, [], root)
                    console.print(result)
                    if "refused" in result:
                        table.add_row(dataset, preset, budget, "refused", *[""] * 5)
                        continue
                    shipped: dict[str, Any] = {}
                    if budget == budgets[-1]:
                        shipped = deployed(RunDir(root / "runs" / f"{dataset}-{preset}-{budget}"))
                        console.print(shipped)
                    fp32, int8 = shipped.get("fp32"), shipped.get("int8")
                    table.add_row(
                        dataset, preset, budget, str(result["steps"]),
                        f"{result['AP']:.3f}", f"{result['AP50']:.3f}",
                        f"{fp32['ms']:.1f}" if fp32 else "", f"{int8['ms']:.1f}" if int8 else "—" if fp32 else "",
                        f"{int8['AP']:.3f}" if int8 else "",
                    )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
