"""`tfod data stats`: a dataset's summary and plots (classes, box sizes and shapes, samples)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tfod.data.dataset import MEDIUM_AREA, SMALL_AREA, load_summary
from tfod.data.masks import decode_png
from tfod.data.tfrecord import DecodedExample, read_examples
from tfod.errors import TfodError
from tfod.figures import image_grid, save_png, use_headless_backend

SAMPLE_COUNT = 12


def write_plots(directory: Path, out: Path) -> list[Path]:
    """Write classes.png, boxes.png and samples.png for the dataset in `directory` into `out`."""
    use_headless_backend()
    summary = load_summary(directory)
    shards = [directory / name for split in summary["splits"].values() for name in split["shards"]]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise TfodError(f"shard listed in dataset.json is missing: {missing[0].name}", directory)
    examples = list(read_examples(shards))
    names = {c["id"]: c["name"] for c in summary["classes"]}
    return [
        save_png(out / "classes.png", _class_figure(summary)),
        save_png(out / "boxes.png", _box_figure(examples)),
        save_png(out / "samples.png", _sample_figure(examples, names)),
    ]


def _class_figure(summary: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    classes = [c["name"] for c in summary["classes"]]
    splits = summary["splits"]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(classes) + 2), 3.5))
    width = 0.8 / max(len(splits), 1)
    for offset, (split, data) in enumerate(splits.items()):
        xs = np.arange(len(classes)) + offset * width
        axis.bar(xs, [data["per_class"].get(c, 0) for c in classes], width, label=split)
    axis.set_xticks(
        np.arange(len(classes)) + width * (len(splits) - 1) / 2, classes, rotation=30, ha="right"
    )
    axis.set_ylabel("boxes")
    axis.set_title("Boxes per class")
    axis.legend()
    return figure


def _box_figure(examples: list[DecodedExample]) -> Any:
    import matplotlib.pyplot as plt

    sides, aspects = [], []
    for ex in examples:
        for x0, y0, x1, y1 in ex.boxes:
            w, h = (x1 - x0) * ex.width, (y1 - y0) * ex.height
            if w > 0 and h > 0:
                sides.append(math.sqrt(w * h))
                aspects.append(math.log2(w / h))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.hist(sides, bins=30, color="tab:blue")
    for edge, name in (
        (math.sqrt(SMALL_AREA), "small|medium"),
        (math.sqrt(MEDIUM_AREA), "medium|large"),
    ):
        left.axvline(edge, color="grey", linestyle="--")
        left.text(edge, left.get_ylim()[1] * 0.95, f" {name}", fontsize=8, va="top")
    left.set_xlabel("box size: sqrt(area) in pixels")
    left.set_ylabel("boxes")
    left.set_title("Box sizes (COCO buckets dashed)")
    right.hist(aspects, bins=30, color="tab:orange")
    right.set_xlabel("log2(width / height)")
    right.set_title("Box aspect ratios")
    return figure


def _sample_figure(examples: list[DecodedExample], names: dict[int, str]) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    figure, pairs = image_grid(examples[:SAMPLE_COUNT])
    colours = plt.get_cmap("tab10")
    for axis, ex in pairs:
        for png, label in zip(ex.masks, ex.labels, strict=False):
            tint = np.zeros((ex.height, ex.width, 4))
            tint[decode_png(png) > 0] = (*colours(label % 10)[:3], 0.45)
            axis.imshow(tint, extent=(0, ex.width, ex.height, 0), interpolation="nearest")
        for (x0, y0, x1, y1), label in zip(ex.boxes, ex.labels, strict=True):
            colour = colours(label % 10)
            axis.add_patch(
                Rectangle(
                    (x0 * ex.width, y0 * ex.height),
                    (x1 - x0) * ex.width,
                    (y1 - y0) * ex.height,
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.5,
                )
            )
            axis.text(
                x0 * ex.width,
                y0 * ex.height,
                names.get(label, str(label)),
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": colour, "pad": 1, "linewidth": 0},
            )
        axis.set_title(ex.filename, fontsize=7)
    masks = any(ex.masks for ex in examples[:SAMPLE_COUNT])
    figure.suptitle("Sample images with their boxes" + (" and masks" if masks else ""))
    return figure
