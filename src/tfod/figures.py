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
