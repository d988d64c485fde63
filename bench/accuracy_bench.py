"""Accuracy per minute of training: each mobile preset, from scratch with `tfod init`'s
defaults, for fixed wall-clock budgets (`train.time`) on generated datasets unlike the demo.

Usage: python bench/accuracy_bench.py [--budgets 5m,10m] [--presets P1,P2] [--datasets
clutter,large] [--set train.learning_rate=0.04 ...] [--images 240]

Datasets (320 px pictures, textured backgrounds, 80/20 split):
- `clutter`: 6 to 15 small shapes (12-36 px) per picture over 12 unlabelled strokes and rings.
- `large`: 1 or 2 large shapes (90-220 px) in 12 classes: 3 shapes x 4 colour bands.

Each run is `tfod init DATA --preset P` then `tfod train --time BUDGET`, with the `--set`
overrides applied to the generated tfod.yaml (how the variants tried are measured). The table
has the best AP/AP50 of each run, the steps it fitted into the budget and the wall time; a
budget tfod refuses on this machine is a `refused` row, its message printed below the table.
A run that ends more than 10% off its budget has its timing record printed below the table (its
calibration, fitted and final step, each evaluation's time and length), because the run itself
is deleted with the bench's temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from tfod.config.schema import load_config, parse_duration
from tfod.config.template import write_template
from tfod.data.convert import ConvertOptions, convert
from tfod.data.demo import Scenes, write_scenes
from tfod.errors import TfodError
from tfod.train.trainer import train

MOBILE = (
    "retinanet-mobilenetv2-256",
    "retinanet-mobilenetv2-320",
    "retinanet-mobilenetv2-ssd-256",
    "retinanet-spinenet49-mobile-384",
)
DATASETS = {
    "clutter": Scenes(size=320, objects=(6, 16), sides=(12, 36), clutter=12),
    "large": Scenes(size=320, objects=(1, 3), sides=(90, 220), hues=4),
}


def make_dataset(root: Path, name: str, n: int, seed: int = 7) -> Path:
    source = root / f"{name}-src"
    write_scenes(source, n, np.random.default_rng(seed), scenes=DATASETS[name])
    out = root / name
    convert(source, out, ConvertOptions(seed=seed, progress=False))
    return out


def assign(raw: dict[str, Any], dotted: str) -> None:
    """Apply one `section.key=value` (value parsed as YAML) to a parsed tfod.yaml."""
    key, _, value = dotted.partition("=")
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def bench_one(
    data: Path, preset: str, budget: str, settings: list[str], root: Path
) -> dict[str, Any]:
    name = f"{data.name}-{preset}-{budget}"
    path = root / f"{name}.yaml"
    write_template(path, data, preset, name, force=True)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["time"], raw["train"]["steps"] = budget, None
    for setting in settings:
        assign(raw, setting)
    path.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    try:
        result = train(load_config(path), root / "runs", progress=False)
    except TfodError as error:  # e.g. a budget too short for one evaluation on this machine
        return {"dataset": data.name, "preset": preset, "budget": budget, "refused": str(error)}
    wall = time.monotonic() - started
    rows = result.run.metrics()
    best = max(rows, key=lambda r: r["metrics"]["AP"]) if rows else {"metrics": {}}
    state = result.run.read()
    off = abs(wall / parse_duration(budget) - 1.0) > 0.1
    timing = {
        "time_budget": state.get("time_budget"),
        "final_steps": state["plan"]["steps"],
        "sessions": state.get("sessions"),
        "evaluations": [(r["step"], r["time"], r["seconds"]) for r in rows],
    }
    return {
        "dataset": data.name,
        "preset": preset,
        "budget": budget,
        "steps": result.step,
        "lr": state["plan"]["learning_rate"],
        "wall": wall,
        "AP": best["metrics"].get("AP", 0.0),
        "AP50": best["metrics"].get("AP50", 0.0),
        **({"off_budget": timing} if off else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5m,10m")
    parser.add_argument("--presets", default=",".join(MOBILE))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--set", action="append", default=[], dest="settings")
    parser.add_argument("--images", type=int, default=240)
    args = parser.parse_args()
    console = Console()
    results = []
    with tempfile.TemporaryDirectory(prefix="tfod-accuracy-bench-") as tmp:
        root = Path(tmp)
        for dataset in args.datasets.split(","):
            data = make_dataset(root, dataset, args.images)
            for preset in args.presets.split(","):
                for budget in args.budgets.split(","):
                    results.append(bench_one(data, preset, budget, args.settings, root))
                    console.print(results[-1])
    extra = f", {' '.join(args.settings)}" if args.settings else ""
    table = Table(title=f"Accuracy per budget, from scratch, {os.cpu_count()} cores{extra}")
    for column in ("dataset", "preset", "budget", "steps", "lr", "minutes", "AP", "AP50"):
        table.add_column(column, justify="right")
    for r in results:
        if "refused" in r:
            table.add_row(r["dataset"], r["preset"], r["budget"], "refused", "", "", "", "")
            continue
        table.add_row(
            r["dataset"], r["preset"], r["budget"], str(r["steps"]), f"{r['lr']:.4g}",
            f"{r['wall'] / 60:.1f}", f"{r['AP']:.3f}", f"{r['AP50']:.3f}",
        )  # fmt: skip
    console.print(table)
    for r in results:
        if "refused" in r:
            console.print(f"{r['dataset']} {r['preset']} {r['budget']}: {r['refused']}")
        if "off_budget" in r:
            console.print(
                f"{r['dataset']} {r['preset']} {r['budget']} ended {r['wall']:.0f} s in, more "
                "than 10% off its budget; its timing record:",
                r["off_budget"],
            )


if __name__ == "__main__":
    main()
