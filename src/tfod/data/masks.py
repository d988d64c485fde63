"""Instance masks checked against the real image as their boxes are (placed, clipped), rasterised
at the image's size, and stored as PNG (what Model Garden's Mask R-CNN decoder reads from
`image/object/mask`) and as COCO RLE (the validation ground truth's `segmentation`)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from tfod.data.annotations import Kind, Mask
from tfod.data.placement import Placement

# An RLE larger than this many times the image is refused before it is decoded (a bomb), as is a
# polygon point farther out than this many image sides (rasterising walks every edge's length).
_MAX_SCALE = 16
# Rings of more points than this are not checked for crossings (the check compares every pair).
_MAX_CROSSING_CHECK = 2000
_CLIP_TOLERANCE = 1e-6  # as for boxes: float noise is not a clip


@dataclass(frozen=True)
class CheckedMask:
    """A mask ready for a TF Example: 0/1 pixels of the stored image.

    Args:
        png: the pixels as a one-channel PNG.
        rle: COCO's compressed RLE of the pixels ({"size": [h, w], "counts": str}).
        pixels: how many pixels it covers.
        rectangle: the box stands in for a mask the annotation lacks or that could not be used.
    """

    png: bytes
    rle: dict[str, Any]
    pixels: int
    rectangle: bool = False


def check_mask(
    mask: Mask | None,
    box: tuple[float, float, float, float],
    placed: Placement,
    size: tuple[int, int],
    where: str,
    report: Callable[[Kind, str], None],
) -> CheckedMask:
    """`mask` on the real image of `size` (w, h), or the rectangle `box` (pixels of that image)
    where it has none (`MISSING_MASK`) or cannot be used (`INVALID_MASK`), reported."""
    width, height = size
    if mask is None:
        report(Kind.MISSING_MASK, f"{where}: no mask; its box is used as its mask")
        return _rectangle(box, width, height)
    notes: list[tuple[Kind, str]] = []
    try:
        if mask.rle is not None:
            pixels = _from_rle(mask.rle, placed, width, height)
        elif mask.instance is not None:
            pixels = _from_instance_image(*mask.instance, placed, width, height)
        elif mask.png is not None:
            pixels = placed.raster(
                _index_image(mask.png, "its mask", width, height) > 0, width, height
            )
        else:
            pixels = _from_polygons(mask, placed, width, height, notes)
        if not pixels.any():
            raise ValueError("the mask covers no pixel of the image")
    except ValueError as err:
        report(Kind.INVALID_MASK, f"{where}: {err}; its box is used as its mask")
        return _rectangle(box, width, height)
    for kind, detail in notes:
        report(kind, f"{where}: {detail}")
    return _checked(pixels)


def _from_polygons(
    mask: Mask,
    placed: Placement,
    width: int,
    height: int,
    notes: list[tuple[Kind, str]],
) -> np.ndarray:
    """The polygons' pixels; a clip or a crossing noted in `notes`."""
    from pycocotools import mask as coco_mask

    if mask.problem:
        raise ValueError(mask.problem)
    if not mask.polygons:
        raise ValueError("an empty list of polygons")
    rings = []
    for ring in mask.polygons:
        if len(ring) < 6 or len(ring) % 2:
            raise ValueError(f"a polygon needs 3 or more (x, y) points, got {len(ring)} numbers")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ring):
            raise ValueError("a polygon's coordinates are not all numbers")
        points = [placed.point(ring[i], ring[i + 1]) for i in range(0, len(ring), 2)]
        rings.append(points)
    side = max(width, height)
    if any(abs(v) > _MAX_SCALE * side for ring in rings for point in ring for v in point):
        raise ValueError(f"a polygon point lies more than {_MAX_SCALE} image sides away")
    tolerance = _CLIP_TOLERANCE * side
    if any(
        not (-tolerance <= x <= width + tolerance and -tolerance <= y <= height + tolerance)
        for ring in rings
        for x, y in ring
    ):
        notes.append((Kind.MASK_CLIPPED, f"polygon clipped to the {width}x{height} image"))
    if any(_self_intersecting(np.asarray(ring)) for ring in rings):
        notes.append((Kind.SELF_INTERSECTING_MASK, "a polygon crosses itself"))
    flat = [[v for point in ring for v in point] for ring in rings]
    rle = coco_mask.merge(coco_mask.frPyObjects(flat, height, width))
    return np.asarray(coco_mask.decode(rle), dtype=np.uint8)


def _from_rle(rle: dict[str, Any], placed: Placement, width: int, height: int) -> np.ndarray:
    from pycocotools import mask as coco_mask

    size, counts = rle.get("size"), rle.get("counts")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"an RLE's size must be [height, width], got {size!r}")
    h, w = size
    if h * w > _MAX_SCALE * width * height:
        raise ValueError(f"an RLE of {w}x{h} for a {width}x{height} image")
    if isinstance(counts, str):
        counts = _uncompressed(counts)
    if not isinstance(counts, list):
        raise ValueError(f"an RLE's counts must be a list or a string, got {type(counts).__name__}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError("an RLE's counts must be whole numbers of at least 0")
    if sum(counts) != h * w:
        raise ValueError(f"an RLE's counts sum to {sum(counts)}, not {h}x{w} = {h * w}")
    encoded = coco_mask.frPyObjects({"size": size, "counts": counts}, h, w)
    pixels = np.asarray(coco_mask.decode(encoded), dtype=np.uint8)
    return placed.raster(pixels, width, height)


def _from_instance_image(
    path: Path, value: int, placed: Placement, width: int, height: int
) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path.name}: {err.strerror or err}") from None
    pixels = (_index_image(data, path.name, width, height) == value).astype(np.uint8)
    return placed.raster(pixels, width, height)


def _index_image(data: bytes, name: str, width: int, height: int) -> np.ndarray:
    """The values of the one-channel image `data` (`name` in messages); its header is read first,
    so one far larger than the image it outlines is refused before it is decoded."""
    from tfod.data.images import ImageError, decode_image

    try:
        with Image.open(io.BytesIO(data)) as header:
            mode, (columns, rows) = header.mode, header.size
    except UnidentifiedImageError:
        raise ValueError(f"cannot read {name}: not an image format Pillow reads") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read {name}: {err}") from None
    if mode not in ("P", "L", "1"):
        raise ValueError(f"{name} is not a one-channel image (mode {mode})")
    if columns * rows > _MAX_SCALE * width * height:
        raise ValueError(f"{name} is {columns}x{rows}, not the image's size")
    try:
        with decode_image(data) as indices:
            return np.asarray(indices, dtype=np.uint8)
    except ImageError as err:
        raise ValueError(f"cannot read {name}: {err}") from None


def _uncompressed(text: str) -> list[int]:
    """COCO's compressed RLE counts, decoded here as pycocotools' `rleFrString` does: that C code
    trusts its input, and a malformed string corrupts its memory."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48 if p < len(text) else -1
            if not 0 <= c < 64:
                raise ValueError("an RLE's compressed counts are not COCO's encoding")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _self_intersecting(points: np.ndarray) -> bool:
    """Whether two edges of the closed ring `points` [n, 2] that share no corner cross."""
    n = len(points)
    if n < 4 or n > _MAX_CROSSING_CHECK:
        return False
    a, b = points, np.roll(points, -1, axis=0)

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        turn: np.ndarray = (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (
            q[..., 1] - p[..., 1]
        ) * (r[..., 0] - p[..., 0])
        signs: np.ndarray = np.sign(turn)
        return signs

    ai, bi = a[:, None], b[:, None]
    aj, bj = a[None, :], b[None, :]
    crosses = (side(ai, bi, aj) * side(ai, bi, bj) < 0) & (side(aj, bj, ai) * side(aj, bj, bi) < 0)
    index = np.arange(n)
    gap = np.abs(index[:, None] - index[None, :])
    apart = (gap > 1) & (gap < n - 1)  # edges that share no corner
    return bool((crosses & apart).any())


def _rectangle(box: tuple[float, float, float, float], width: int, height: int) -> CheckedMask:
    from pycocotools import mask as coco_mask

    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64)
    rle = coco_mask.frPyObjects(corners, height, width)
    pixels = np.asarray(coco_mask.decode(rle)[..., 0], dtype=np.uint8)
    if not pixels.any():  # a box thinner than a pixel: the pixel it lies in
        pixels[min(int(y0), height - 1), min(int(x0), width - 1)] = 1
    return _checked(pixels, rectangle=True)


def _checked(pixels: np.ndarray, rectangle: bool = False) -> CheckedMask:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return CheckedMask(
        png=buffer.getvalue(), rle=encode_rle(pixels), pixels=int(pixels.sum()), rectangle=rectangle
    )


def encode_rle(pixels: np.ndarray) -> dict[str, Any]:
    """0/1 pixels [h, w] as COCO's compressed RLE, JSON-ready."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def paste(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """A Mask R-CNN's box-relative mask probabilities [N, mh, mw] on a `width` x `height` image
    as 0/1 pixels [N, height, width], pasted into `boxes` ([N, 4] x, y, w, h in its pixels) as
    Model Garden's COCO evaluator pastes them."""
    from official.vision.ops import mask_ops

    if not len(masks):
        return np.zeros((0, height, width), np.uint8)
    return np.asarray(mask_ops.paste_instance_masks(masks, boxes, height, width), np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    """A stored mask's 0/1 pixels [h, w]."""
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint8)
