"""Float vs. post-training int8 vs. QAT int8: AP, ΔAP, size and latency, side by side.

Usage: python bench/qat_bench.py [--steps 600] [--qat-steps 0] [--datasets demo,hard]
[--preset retinanet-mobilenetv2-ssd-256]

For each generated dataset: a float run of a QAT-capable preset (`retinanet-mobilenetv2-ssd-256`,
ReLU6 activations, by default; `retinanet-spinenet49-mobile-384` has unbounded swish ones) trained
from scratch with the demo's recipe; `tfod qat` of it (default length: a tenth);
`tfod export` of the QAT run, which also builds the float parent's post-training int8 (calibrated
on 200 training images, float input); and, to find where post-training int8 breaks, the float
run exported again with 1 calibration image and uint8 input. `tfod verify` scores all of them on
the validation split in one process against the float parent.

Datasets: `demo` (the demo's shapes, 160 images) and `hard`: the same shapes under a per-image
exposure (x0.25 to x1.75 contrast, +-60 brightness) with sensor noise, so a few calibration
images cannot show the activation ranges the rest of the images need.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from tfod.config.presets import SPINENET_QAT_OVERRIDE, qat_presets
from tfod.data.convert import ConvertOptions, convert
from tfod.data.demo import make_demo, write_scenes
from tfod.export.exporter import export
from tfod.export.verify import verify
from tfod.train.demo import DEMO_BATCH, DEMO_IMAGES, DEMO_LEARNING_RATE, demo_config
from tfod.train.qat import qat_config
from tfod.train.trainer import train

DEFAULT_PRESET = "retinanet-mobilenetv2-ssd-256"


def hard_dataset(root: Path, n: int, seed: int) -> Path:
    """The demo's shapes under a random exposure per image, with noise."""

    def expose(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
        pixels = np.asarray(picture, dtype=np.float32)
        contrast, brightness = rng.uniform(0.25, 1.75), rng.uniform(-60, 60)
        pixels = (pixels - 128) * contrast + 128 + brightness + rng.normal(0, 12, pixels.shape)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    source = root / "src"
    write_scenes(source, n, np.random.default_rng(seed), retouch=expose)
    out = root / "hard"
    convert(source, out, ConvertOptions(seed=seed, progress=False))
    return out


def bench_dataset(
    name: str, data: Path, runs: Path, preset: str, steps: int, qat_steps: int | None
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Train, QAT, export and verify one dataset; (verification rows, minutes per stage)."""
    minutes: dict[str, float] = {}
    clock = time.perf_counter()
    config = demo_config(data, steps)
    model = config.model.model_copy(update={"preset": preset})
    # SpineNet-Mobile's QAT needs its float parent built with Keras upsampling layers.
    overrides = SPINENET_QAT_OVERRIDE if "spinenet" in preset else {}
    config = config.model_copy(update={"name": name, "model": model, "overrides": overrides})
    parent = train(config, runs, progress=False).run
    minutes["float"] = (time.perf_counter() - clock) / 60

    clock = time.perf_counter()
    quantized = train(qat_config(parent, steps=qat_steps), runs, progress=False).run
    minutes["qat"] = (time.perf_counter() - clock) / 60

    clock = time.perf_counter()
    export(quantized, formats=["tflite"], calibration_images=200)
    rows = [row.as_dict() for row in verify(quantized)[0]]
    # Where post-training int8 breaks: 1 calibration image and uint8 input, verified against the
    # same float checkpoint (the float run's own export of its best = the QAT run's parent copy).
    export(parent, formats=["tflite"], quants=["int8"], calibration_images=1, io="uint8")
    stress = verify(parent)[0]
    minutes["export + verify"] = (time.perf_counter() - clock) / 60
    reference = rows[0]
    for row in stress[1:]:
        record = row.as_dict()
        record["name"] = "parent " + record["name"]
        record["note"] = f"1 calibration image, {row.note}"
        record["delta_ap"] = row.ap - float(reference["ap"])  # type: ignore[arg-type]
        rows.append(record)
    return rows, minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="float training steps")
    parser.add_argument("--qat-steps", type=int, default=0, help="0: tfod qat's default")
    parser.add_argument("--datasets", default="demo,hard")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=qat_presets())
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tfod-qat-bench-") as tmp:
        root = Path(tmp)
        for name in args.datasets.split(","):
            data = root / name
            if name == "demo":
                make_demo(data, n=DEMO_IMAGES, progress=False)
            else:
                data = hard_dataset(root / "hard-src", DEMO_IMAGES, seed=11)
            rows, minutes = bench_dataset(
                name, data, root / "runs", args.preset, args.steps, args.qat_steps or None
            )
            table = Table(
                title=f"{name}: {args.preset}, float {args.steps} steps (batch {DEMO_BATCH}, lr "
                f"{DEMO_LEARNING_RATE}), then QAT; {os.cpu_count()} cores; minutes: "
                + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items())
            )
            for column in ("model", "AP", "AP50", "ΔAP vs float", "size", "latency"):
                table.add_column(column, justify="left" if column == "model" else "right")
            for row in rows:
                size = row["bytes"]
                table.add_row(
                    f"{row['name']} ({row['note']})" if row["note"] else str(row["name"]),
                    f"{row['ap']:.3f}", f"{row['ap50']:.3f}",
                    "ref" if row is rows[0] else f"{row['delta_ap']:+.3f}",
                    f"{int(size) / 1e6:.2f} MB" if size else "—",  # type: ignore[call-overload]
                    f"{row['latency_ms']:.1f} ms",
                )  # fmt: skip
            console.print(table)
            shutil.rmtree(root / "runs", ignore_errors=True)


if __name__ == "__main__":
    main()
