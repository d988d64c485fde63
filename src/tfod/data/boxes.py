"""Boxes checked against the real image: rescaled, clipped or dropped, each change a `Problem`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from tfod.data.annotations import Box, Kind, Problem, SourceImage
from tfod.data.masks import CheckedMask, check_mask
from tfod.data.placement import placement

# Coordinates that overshoot the image by less than this fraction of its side are float noise
# (e.g. a YOLO centre+half-width summing to 1.0000001) and are clamped without a report.
_CLIP_TOLERANCE = 1e-6


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
    mask: CheckedMask | None = None


def check_boxes(
    image: SourceImage,
    width: int,
    height: int,
    class_ids: dict[str, int],
    orientation: int = 1,
    masks: bool = False,
) -> tuple[list[CheckedBox], list[Problem]]:
    """Check `image`'s boxes against the real (upright) size `width` x `height`.

    `orientation` is the EXIF orientation the image was turned upright by (see `placement`).
    With `masks`, every box kept carries its mask, checked by `tfod.data.masks.check_mask`.

    Returns:
        The boxes to keep, normalised, and a problem for every box rescaled, clipped or dropped.
    """
    problems: list[Problem] = []

    def report(kind: Kind, detail: str) -> None:
        problems.append(Problem(kind, image.annotation, f"{image.rel}: {detail}"))

    placed = placement(image, width, height, orientation, report)
    kept: list[CheckedBox] = []
    for box in image.boxes:
        if box.label not in class_ids:
            report(Kind.UNKNOWN_CLASS, f"{box.where}: class {box.label!r} is not in the class list")
            continue
        checked = _check_one(box, *placed.corners(box), width, height, class_ids[box.label], report)
        if checked is not None and masks:
            corners = (checked.xmin * width, checked.ymin * height,
                       checked.xmax * width, checked.ymax * height)  # fmt: skip
            mask = check_mask(box.mask, corners, placed, (width, height), box.where, report)
            checked = dataclasses.replace(checked, mask=mask)
        if checked is not None:
            kept.append(checked)
    return kept, problems


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
