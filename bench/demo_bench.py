"""The demo, start to finish, timed: how long `tfod demo` takes on this machine and what it reaches.

Usage: python bench/demo_bench.py [--steps N]

Runs `tfod demo` in a fresh temporary folder (dataset generation, conversion, training with
inline evaluation) and prints one table: wall time of each phase, and AP / AP50 at every
evaluation, so the time-to-accuracy trade-off is visible side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tfod.data.demo import make_demo
from tfod.runs.rundir import RunDir
from tfod.train.demo import DEMO_IMAGES, DEMO_STEPS, demo_config
from tfod.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tfod-demo-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_demo(root / "data", n=DEMO_IMAGES, progress=False)
        data_seconds = time.perf_counter() - start
        result = train(demo_config(root / "data", args.steps), root / "runs", progress=False)
        total = time.perf_counter() - start
        rows = RunDir(result.run.path).metrics()
    table = Table(
        title=f"tfod demo: {DEMO_IMAGES} images, {args.steps} steps, {os.cpu_count()} cores, total {total / 60:.1f} min"
    )
    for column in ("phase / step", "minutes", "AP", "AP50", "AP75"):
        table.add_column(column, justify="right")
    table.add_row("dataset", f"{data_seconds / 60:.2f}", "", "", "")
    for row in rows:
        m = row["metrics"]
        table.add_row(
            f"step {row['step']}", "", f"{m['AP']:.3f}", f"{m['AP50']:.3f}", f"{m['AP75']:.3f}"
        )
    table.add_row("total", f"{total / 60:.2f}", "", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
