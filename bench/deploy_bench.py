"""Export benchmark: size, AP and batch-1 latency of every artefact of the demo run, side by side.

Usage: python bench/deploy_bench.py [--run runs/demo] [--calibration-images 200]

Uses the demo run if it exists (`nox -s demo` makes it), else trains one first (~8 min). Exports
SavedModel, ONNX and TFLite fp32/fp16/int8 (with MediaPipe metadata), verifies each on the validation split in one process, and
prints the verification table plus the int8/fp32 TFLite latency ratios.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from tfod.export.exporter import export
from tfod.export.report import print_export, print_verification
from tfod.export.verify import verify
from tfod.runs.rundir import RunDir
from tfod.train.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--calibration-images", type=int, default=200)
    args = parser.parse_args()
    console = Console(width=200)  # the verification table is wide; a log is no terminal
    run = RunDir(args.run)
    if not run.exists() or run.read().get("status") != "finished":
        console.print(f"No finished demo run at {args.run}: training it first.")
        run = run_demo(Path("data/demo"), args.run.parent).run
    manifest = export(run, calibration_images=args.calibration_images, on_step=console.print)
    print_export(console, manifest)
    rows, images = verify(run)
    print_verification(console, rows, images)
    by_name = {row.name: row for row in rows}
    fp32, int8 = by_name["model_fp32.tflite"], by_name["model_int8.tflite"]
    console.print(
        f"int8 / fp32 TFLite: latency {int8.latency_ms / fp32.latency_ms:.2f}x, "
        f"invoke {int8.invoke_ms / fp32.invoke_ms:.2f}x, "
        f"size {int8.bytes / fp32.bytes:.2f}x, ΔAP {int8.ap - fp32.ap:+.3f}"  # type: ignore[operator]
    )


if __name__ == "__main__":
    main()
