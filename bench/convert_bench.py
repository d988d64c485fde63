"""Converter throughput: the same generated dataset converted with 1 and with N worker processes.

Usage: python bench/convert_bench.py [--images 1000] [--workers N]

Prints one table: workers, seconds, images/s and the speed-up over one worker, measured side by
side in one run. Images are 640x480: 90% upright RGB JPEGs (passed through after a full decode)
and 10% PNGs (decoded and re-encoded), like a typical labelled folder with a few odd files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from tfod.data.convert import ConvertOptions, convert

WIDTH, HEIGHT = 640, 480


def make_source(root: Path, count: int) -> None:
    """Write `count` smooth 640x480 images with 1-3 boxes each and a COCO JSON."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        pixels = np.asarray(picture).copy()
        pixels += rng.integers(0, 12, pixels.shape, dtype=np.uint8)
        fmt = "PNG" if image_id % 10 == 0 else "JPEG"
        name = f"images/{image_id:05d}.{fmt.lower()}"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(
            buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {})
        )
        (root / name).write_bytes(buffer.getvalue())
        images.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, WIDTH - 100), rng.uniform(0, HEIGHT - 100)
            w, h = rng.uniform(20, 100, 2)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                 "bbox": [x, y, w, h], "iscrowd": 0}
            )  # fmt: skip
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations.json").write_text(json.dumps(doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tfod-bench-") as tmp:
        source = Path(tmp) / "source"
        console.print(f"Generating {args.images} images of {WIDTH}x{HEIGHT}...")
        make_source(source, args.images)
        megabytes = sum(p.stat().st_size for p in source.rglob("*.*")) / 2**20
        # Warm-up: imports TensorFlow and fills the page cache, so both runs start alike.
        convert(source, Path(tmp) / "warm", ConvertOptions(progress=False, workers=1))
        rows = []
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            convert(
                source, Path(tmp) / f"out{workers}", ConvertOptions(progress=False, workers=workers)
            )
            rows.append((workers, time.perf_counter() - start))
    table = Table(
        title=f"tfod data convert: {args.images} images, {megabytes:.0f} MB, {os.cpu_count()} cores"
    )
    for column in ("workers", "seconds", "images/s", "speed-up"):
        table.add_column(column, justify="right")
    base = rows[0][1]
    for workers, seconds in rows:
        table.add_row(
            str(workers), f"{seconds:.1f}", f"{args.images / seconds:.0f}", f"{base / seconds:.2f}x"
        )
    console.print(table)


if __name__ == "__main__":
    main()
