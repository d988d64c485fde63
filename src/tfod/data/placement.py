"""Where an annotation's coordinates land on the real image: rescaled to its real size, or turned
with it by its EXIF orientation. Boxes and masks are placed alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tfod.data.annotations import Box, Kind, SourceImage

# EXIF orientation -> where a point (x, y) of the stored w x h pixels lands in the upright image.
# 5-8 turn the image a quarter: an annotation made on the stored pixels shows by its swapped size.
_UPRIGHT: dict[int, Callable[[float, float, float, float], tuple[float, float]]] = {
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}
# The same turns for a raster [row = y, column = x] of the stored pixels.
_TURN_RASTER: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.T[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@dataclass(frozen=True)
class Placement:
    """Where the annotation's coordinates land on the real (upright) image: scaled by `scale`, or
    turned with the image by EXIF orientation `turn` (5-8) from the stored `stored` (w, h)."""

    scale: tuple[float, float] = (1.0, 1.0)
    turn: int | None = None
    stored: tuple[int, int] = (0, 0)

    def point(self, x: float, y: float) -> tuple[float, float]:
        if self.turn is not None:
            return _UPRIGHT[self.turn](x, y, *self.stored)
        return x * self.scale[0], y * self.scale[1]

    def raster(self, pixels: np.ndarray, width: int, height: int) -> np.ndarray:
        """An annotated raster (e.g. a mask) on the real `width` x `height` image: turned as the
        points are, or resized (nearest pixel) to that size."""
        if self.turn is not None:
            pixels = _TURN_RASTER[self.turn](pixels)
        if pixels.shape != (height, width):
            resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.NEAREST)
            pixels = np.asarray(resized)
        return pixels

    def corners(self, box: Box) -> tuple[float, float, float, float]:
        """`box`'s corners on the real image, (xmin, ymin, xmax, ymax); an inverted box stays
        inverted (unless turned: a turn swaps which corner is the minimum)."""
        xa, ya = self.point(box.xmin, box.ymin)
        xb, yb = self.point(box.xmax, box.ymax)
        if self.turn is None:
            return xa, ya, xb, yb
        return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)


def placement(
    image: SourceImage,
    width: int,
    height: int,
    orientation: int,
    report: Callable[[Kind, str], None],
) -> Placement:
    """How `image`'s annotation maps onto the real (upright) `width` x `height` image.

    When EXIF `orientation` turned the image a quarter and the annotation's size is the stored
    (sideways) one, the annotation was made on the stored pixels: it is turned with the image. A
    size that differs otherwise rescales it. Both are reported.
    """
    if image.normalized:
        return Placement((float(width), float(height)))
    if image.size == (height, width) and orientation in _UPRIGHT and width != height:
        report(
            Kind.EXIF_ROTATED,
            f"annotated on the image as stored ({height}x{width}); its EXIF orientation "
            f"{orientation} shows it as {width}x{height}",
        )
        return Placement(turn=orientation, stored=(height, width))
    if image.size is not None and image.size != (width, height):
        aw, ah = image.size
        exif = f" (after its EXIF orientation {orientation})" if orientation != 1 else ""
        report(
            Kind.SIZE_MISMATCH,
            f"annotated as {aw}x{ah} but the image is {width}x{height}{exif}",
        )
        return Placement((width / aw if aw > 0 else 1.0, height / ah if ah > 0 else 1.0))
    return Placement()
