"""Saving matplotlib figures: headless (Agg) and atomic, for every plot tfod writes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tfod import atomic


def use_headless_backend() -> None:
    """Draw without a display (servers, containers, CI)."""
    import matplotlib

    matplotlib.use("Agg")


def save_png(path: Path, figure: Any) -> Path:
    """Write `figure` as a PNG to `path` atomically, close it, and return `path`."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def image_grid(examples: list[Any], columns: int = 4) -> tuple[Any, list[tuple[Any, Any]]]:
    """A figure with one axis per example's image (axes off); returns it and (axis, example) pairs."""
    import math

    import matplotlib.pyplot as plt
    from PIL import Image

    rows = max(1, math.ceil(len(examples) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    pairs = list(zip(axes.flat, examples, strict=False))
    for axis, example in pairs:
        axis.imshow(Image.open(io.BytesIO(example.encoded)).convert("RGB"))
    return figure, pairs
