"""Boxes checked against the real image: rescaled, clipped or dropped, each change a `Problem`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from tfod.data.annotations import Box, Kind, Problem, SourceImage

# Coordinates that overshoot the image by less than this fraction of its side are float noise
# (e.g. a YOLO centre+half-width summing to 1.0000001) and are clamped without a report.
_CLIP_TOLERANCE = 1e-6

# EXIF orientation -> where a point (x, y) of the stored w x h pixels lands in the upright image.
# 5-8 turn the image a quarter: an annotation made on the stored pixels shows by its swapped size.
_UPRIGHT: dict[int, Callable[[float, float, float, float], tuple[float, float]]] = {
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}


@dataclass(frozen=True)
class CheckedBox:
    """A box ready for a TF Example: class id and normalised [0, 1] corners of the stored image."""

    label_id: int
    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    is_crowd: bool
    difficult: bool
    truncated: bool


def check_boxes(
    image: SourceImage,
    width: int,
    height: int,
    class_ids: dict[str, int],
    orientation: int = 1,
) -> tuple[list[CheckedBox], list[Problem]]:
    """Check `image`'s boxes against the real (upright) size `width` x `height`.

    `orientation` is the EXIF orientation the image was turned upright by. When it turned the image
    a quarter and the annotation's size is the stored (sideways) one, the annotation was made on
    the stored pixels: its boxes are turned with the image, and that is reported.

    Returns:
        The boxes to keep, normalised, and a problem for every box rescaled, clipped or dropped.
    """
    problems: list[Problem] = []

    def report(kind: Kind, detail: str) -> None:
        problems.append(Problem(kind, image.annotation, f"{image.rel}: {detail}"))

    boxes = image.boxes
    if image.normalized:
        sx, sy = float(width), float(height)
    elif image.size == (height, width) and orientation in _UPRIGHT and width != height:
        report(
            Kind.EXIF_ROTATED,
            f"annotated on the image as stored ({height}x{width}); its EXIF orientation "
            f"{orientation} shows it as {width}x{height}",
        )
        boxes = [_turn(box, orientation, height, width) for box in boxes]
        sx, sy = 1.0, 1.0
    elif image.size is not None and image.size != (width, height):
        aw, ah = image.size
        exif = f" (after its EXIF orientation {orientation})" if orientation != 1 else ""
        report(
            Kind.SIZE_MISMATCH,
            f"annotated as {aw}x{ah} but the image is {width}x{height}{exif}",
        )
        sx, sy = width / aw if aw > 0 else 1.0, height / ah if ah > 0 else 1.0
    else:
        sx, sy = 1.0, 1.0

    kept: list[CheckedBox] = []
    for box in boxes:
        if box.label not in class_ids:
            report(Kind.UNKNOWN_CLASS, f"{box.where}: class {box.label!r} is not in the class list")
            continue
        checked = _check_one(
            box,
            box.xmin * sx,
            box.ymin * sy,
            box.xmax * sx,
            box.ymax * sy,
            width,
            height,
            class_ids[box.label],
            report,
        )
        if checked is not None:
            kept.append(checked)
    return kept, problems


def _turn(box: Box, orientation: int, stored_w: int, stored_h: int) -> Box:
    """`box` on the stored pixels -> the same box on the upright image."""
    to_upright = _UPRIGHT[orientation]
    xa, ya = to_upright(box.xmin, box.ymin, stored_w, stored_h)
    xb, yb = to_upright(box.xmax, box.ymax, stored_w, stored_h)
    return dataclasses.replace(
        box, xmin=min(xa, xb), ymin=min(ya, yb), xmax=max(xa, xb), ymax=max(ya, yb)
    )


def _check_one(
    box: Box,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    label_id: int,
    report: Callable[[Kind, str], None],
) -> CheckedBox | None:
    coords = f"({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        report(Kind.INVALID_BOX, f"{box.where}: coordinates are not numbers {coords}")
        return None
    if x1 <= x0 or y1 <= y0:
        what = "zero-area" if x1 == x0 or y1 == y0 else "inverted (max < min)"
        report(Kind.INVALID_BOX, f"{box.where}: {what} box {coords}")
        return None
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        report(
            Kind.BOX_OUTSIDE, f"{box.where}: box {coords} lies outside the {width}x{height} image"
        )
        return None
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, float(width)), min(y1, float(height))
    overshoot = max(cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1)
    if overshoot > _CLIP_TOLERANCE * max(width, height):
        report(Kind.BOX_CLIPPED, f"{box.where}: box {coords} clipped to the {width}x{height} image")
    return CheckedBox(
        label_id=label_id,
        label=box.label,
        xmin=cx0 / width,
        ymin=cy0 / height,
        xmax=cx1 / width,
        ymax=cy1 / height,
        is_crowd=box.is_crowd,
        difficult=box.difficult,
        truncated=box.truncated,
    )
