"""`tfod data demo`: a deterministic synthetic detection dataset, converted like any user's.

Coloured circles, squares and triangles (varied size, colour and rotation, one to four per image,
some overlapping) on textured backgrounds. The images and a COCO JSON are written to a temporary
source folder and converted by `tfod.data.convert`, so the demo exercises the real code path.
"""

from __future__ import annotations

import colorsys
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from tfod import atomic
from tfod.data.convert import ConvertOptions, convert
from tfod.data.dataset import DATASET_JSON
from tfod.errors import TfodError

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 256
MIN_SIDE, MAX_SIDE = 36, 104
MAX_OVERLAP = 0.25  # largest IoU allowed between two objects of one image


@dataclass(frozen=True)
class Scenes:
    """How the generated pictures look: the demo's by default; the benchmarks vary it.

    Args:
        size: picture side in pixels.
        objects: the number of objects per picture, drawn from [low, high).
        sides: the objects' side in pixels, drawn from [low, high).
        hues: with more than one, each shape comes in `hues` colour bands and every
            (shape, band) pair is its own class, e.g. "square-2".
        clutter: unlabelled distracting strokes and rings drawn under the objects.
    """

    size: int = IMAGE_SIZE
    objects: tuple[int, int] = (1, 5)
    sides: tuple[float, float] = (MIN_SIDE, MAX_SIDE)
    hues: int = 1
    clutter: int = 0

    def classes(self) -> tuple[str, ...]:
        if self.hues <= 1:
            return CLASSES
        return tuple(f"{shape}-{band}" for shape in CLASSES for band in range(1, self.hues + 1))


DEMO_SCENES = Scenes()


def make_demo(
    out: Path, n: int = 160, seed: int = 0, progress: bool = True, masks: bool = False
) -> dict[str, Any]:
    """Generate `n` images with seed `seed` and convert them into the dataset folder `out`; with
    `masks`, each object's visible pixels are its mask (the same images and boxes either way).

    Returns:
        The content of the dataset's `dataset.json`.
    """
    if n < 2:
        raise TfodError(f"--n must be at least 2 (one training and one validation image), got {n}")
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="tfod-demo-") as tmp:
        source = Path(tmp)
        write_scenes(source, n, rng, masks=masks)
        summary = convert(source, out, ConvertOptions(format="coco", seed=seed, progress=progress))
    command = f"tfod data demo --n {n} --seed {seed}" + (" --masks" if masks else "")
    summary["source"] = {"format": "coco", "path": command}
    atomic.write_json(out / DATASET_JSON, summary)
    return summary


def write_scenes(
    source: Path,
    n: int,
    rng: np.random.Generator,
    names: tuple[str, ...] | None = None,
    class_of: Callable[[str], str] = lambda shape: shape,
    retouch: Callable[[Image.Image, np.random.Generator], Image.Image] | None = None,
    scenes: Scenes = DEMO_SCENES,
    masks: bool = False,
) -> None:
    """Draw `n` scenes into SOURCE/images/ and write SOURCE/annotations.json (COCO).

    Each object is labelled `class_of(label)`, one of `names` (default: the scenes' classes);
    `retouch` changes a picture (with the same generator) before it is saved; with `masks`, each
    object's `segmentation` is the RLE of its visible pixels. The benchmarks make their other
    datasets this way.
    """
    names = names or scenes.classes()
    (source / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id in range(1, n + 1):
        name = f"images/{image_id:05d}.jpg"
        picture, objects = draw_scene(rng, scenes)
        if retouch is not None:
            picture = retouch(picture, rng)
        picture.save(source / name, quality=92)
        images.append(
            {"id": image_id, "file_name": name, "width": scenes.size, "height": scenes.size}
        )
        visible = instance_masks(objects, scenes.size) if masks else []
        for index, (label, (x0, y0, x1, y1), _) in enumerate(objects):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": names.index(class_of(label)) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    **({"segmentation": visible[index]} if masks else {}),
                }
            )
    categories = [{"id": i, "name": c} for i, c in enumerate(names, start=1)]
    document = {"images": images, "annotations": annotations, "categories": categories}
    (source / "annotations.json").write_text(json.dumps(document), encoding="utf-8")


Box = tuple[float, float, float, float]


class Shape(NamedTuple):
    """An object drawn: its label, its box and its outline (a circle's: its bounding square)."""

    label: str
    box: Box
    outline: list[tuple[float, float]]


def draw_scene(
    rng: np.random.Generator, scenes: Scenes = DEMO_SCENES
) -> tuple[Image.Image, list[Shape]]:
    """One picture and the objects drawn on it, in drawing order."""
    size = scenes.size
    picture = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(picture)
    for _ in range(scenes.clutter):
        _stroke(draw, rng, size)
    objects: list[Shape] = []
    for _ in range(int(rng.integers(*scenes.objects))):
        for _attempt in range(20):
            label = CLASSES[int(rng.integers(len(CLASSES)))]
            side = float(rng.uniform(*scenes.sides))
            cx, cy = (float(v) for v in rng.uniform(side / 2 + 2, size - side / 2 - 2, 2))
            angle = float(rng.uniform(0, 2 * math.pi))
            points = _outline(label, cx, cy, side, angle)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), size), min(max(ys), size))
            if all(_iou(box, other.box) <= MAX_OVERLAP for other in objects):
                break
        else:
            continue
        if scenes.hues > 1:
            band = int(rng.integers(scenes.hues))
            colour = _colour(rng, (band + float(rng.uniform(0.15, 0.85))) / scenes.hues)
            label = f"{label}-{band + 1}"
        else:
            colour = _colour(rng)
        shape = Shape(label, box, points)
        _draw(draw, shape, colour)
        objects.append(shape)
    return picture, objects


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, fill: Any) -> None:
    if shape.label.startswith("circle"):
        draw.ellipse(shape.box, fill=fill)
    else:
        draw.polygon(shape.outline, fill=fill)


def instance_masks(objects: list[Shape], size: int) -> list[dict[str, Any]]:
    """Each object's visible pixels (what later objects leave of it) as COCO's compressed RLE."""
    from pycocotools import mask as coco_mask

    ids = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    for index, shape in enumerate(objects, start=1):
        _draw(draw, shape, index)
    pixels = np.asarray(ids)
    masks = []
    for index in range(1, len(objects) + 1):
        rle = coco_mask.encode(np.asfortranarray((pixels == index).astype(np.uint8)))
        masks.append({"size": [size, size], "counts": rle["counts"].decode("ascii")})
    return masks


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """An unlabelled distractor: a thick line or a ring, in a shape-like colour."""
    x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
    width = int(rng.integers(2, 6))
    if rng.uniform() < 0.5:
        draw.line((x0, y0, x1, y1), fill=_colour(rng), width=width)
    else:
        r = float(rng.uniform(6, size / 8))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=_colour(rng), width=width)


def _outline(
    label: str, cx: float, cy: float, side: float, angle: float
) -> list[tuple[float, float]]:
    """Corner points of the shape (a circle's are those of its bounding square)."""
    r = side / 2
    if label == "circle":
        return [(cx - r, cy - r), (cx + r, cy + r)]
    corners = 4 if label == "square" else 3
    radius = r * math.sqrt(2) * 0.8 if label == "square" else r
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour blotches, faint stripes and grain, in muted colours."""
    coarse = rng.uniform(60, 190, size=(5, 5, 3)).astype(np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64
    )
    grey = smooth.mean(axis=2, keepdims=True)
    smooth = grey + 0.4 * (smooth - grey)  # desaturate so the shapes' colours stand out
    yy, xx = np.mgrid[0:size, 0:size]
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(6, 24)
    stripes = 18 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    grain = rng.normal(0, 7, size=(size, size, 3))
    pixels: np.ndarray = np.clip(smooth + stripes[..., None] + grain, 0, 255).astype(np.uint8)
    return pixels


def _colour(rng: np.random.Generator, hue: float | None = None) -> tuple[int, int, int]:
    drawn = rng.uniform(0, 1)
    hue = drawn if hue is None else hue
    sat, val = rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
