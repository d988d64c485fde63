"""Anchors fitted to a dataset's boxes, as YOLO's autoanchor does, in Model Garden's terms.

Model Garden's RetinaNet anchors at pyramid level l are `anchor_size * 2**l * 2**(i/num_scales)`
pixels (i < num_scales) for each aspect ratio w/h. The presets use their experiment's (ratios
0.5/1/2, anchor size 3 for the mobile ones, 4 for ResNet-FPN). `fit_anchors` clusters the training boxes' aspect ratios (k-means on log w/h) and picks
the anchor size that matches the most boxes, scoring each candidate by best possible recall: the
share of boxes whose best anchor overlaps them at IoU >= 0.5, the matcher's positive threshold.

A YOLOv7's anchors are nine width x height boxes, three per level. `fit_yolo_anchors` clusters the
training boxes' sizes (k-means on log width and height, as YOLO's autoanchor clusters them) and
scores anchors as YOLO's parser matches them: a box is learnt by an anchor whose width and height
are both within a factor YOLO_ANCHOR_THRESHOLD of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSITIVE_IOU = 0.5  # Model Garden's RetinaNet matcher: anchors at or above it learn the box
ANCHOR_SIZES = (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
MIN_GAIN = 0.02  # the fitted anchors must match this many more boxes to be suggested
YOLO_ANCHOR_THRESHOLD = 4.0  # Model Garden's YOLOv7 parser (`anchor_thresh`): the widest match


@dataclass(frozen=True)
class Anchors:
    anchor_size: float
    aspect_ratios: tuple[float, ...]
    num_scales: int
    recall: float  # best possible recall on the boxes it was scored on
    mean_iou: float

    def override(self) -> dict[str, object]:
        """`overrides.task.model.anchor` for tfod.yaml."""
        return {
            "anchor_size": self.anchor_size,
            "aspect_ratios": list(self.aspect_ratios),
            "num_scales": self.num_scales,
        }


def anchor_shapes(
    anchor_size: float,
    ratios: Sequence[float],
    num_scales: int,
    min_level: int,
    max_level: int,
) -> np.ndarray:
    """(N, 2) widths and heights of every anchor Model Garden generates, in input pixels."""
    shapes = []
    for level in range(min_level, max_level + 1):
        for scale in range(num_scales):
            base = anchor_size * 2**level * 2 ** (scale / num_scales)
            shapes += [(base * r**0.5, base * r**-0.5) for r in ratios]
    return np.asarray(shapes, dtype=np.float64)


def score(boxes: np.ndarray, anchors: np.ndarray) -> tuple[float, float]:
    """Best possible recall and mean best IoU of (M, 2) box sizes against (N, 2) anchor sizes
    (both centred: how well the anchor's shape can fit, whatever the grid offset)."""
    w, h = boxes[:, :1], boxes[:, 1:]
    aw, ah = anchors[:, 0][None], anchors[:, 1][None]
    inter = np.minimum(w, aw) * np.minimum(h, ah)
    iou = inter / (w * h + aw * ah - inter)
    best = iou.max(axis=1)
    return float((best >= POSITIVE_IOU).mean()), float(best.mean())


def kmeans_ratios(boxes: np.ndarray, k: int = 3, iterations: int = 50) -> tuple[float, ...]:
    """k aspect ratios (w/h) clustering the boxes' log aspect ratios, rounded, ascending (always
    k of them: the head's size, and so a checkpoint's layout, depends on their number)."""
    logs = np.log(boxes[:, 0] / boxes[:, 1])
    centres = np.quantile(logs, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(logs[:, None] - centres[None]).argmin(axis=1)
        centres = np.array(
            [logs[nearest == j].mean() if np.any(nearest == j) else centres[j] for j in range(k)]
        )
    return tuple(sorted(round(float(np.exp(c)), 2) for c in centres))


def fit_anchors(
    boxes: np.ndarray,
    min_level: int,
    max_level: int,
    anchor_size: float,
    ratios: Sequence[float],
    num_scales: int,
) -> tuple[Anchors, Anchors]:
    """The given (preset's) anchors and the best fitted ones, scored on (M, 2) box sizes in input
    pixels; the fitted ones keep the number of scales and of ratios."""

    def scored(size: float, candidate: tuple[float, ...]) -> Anchors:
        shapes = anchor_shapes(size, candidate, num_scales, min_level, max_level)
        return Anchors(size, candidate, num_scales, *score(boxes, shapes))

    preset = scored(anchor_size, tuple(ratios))
    fitted = kmeans_ratios(boxes, k=len(ratios))
    candidates = [scored(s, r) for r in (tuple(ratios), fitted) for s in ANCHOR_SIZES]
    best = max([preset, *candidates], key=lambda a: (a.recall, a.mean_iou))
    return preset, best


@dataclass(frozen=True)
class YoloAnchors:
    boxes: tuple[tuple[float, float], ...]  # (width, height) in input pixels, ascending area
    recall: float  # share of the boxes some anchor can learn (YOLO_ANCHOR_THRESHOLD)
    fit: float  # mean over boxes of the best anchor's worst side ratio (1: exact)

    def override(self) -> dict[str, object]:
        """`overrides.task.model.anchor_boxes` for tfod.yaml."""
        return {"boxes": [{"box": [w, h]} for w, h in self.boxes]}


def yolo_score(boxes: np.ndarray, anchors: np.ndarray) -> tuple[float, float]:
    """Best possible recall and mean best fit of (M, 2) box sizes against (N, 2) anchor sizes, as
    YOLO's parser matches them (the larger of the width and height ratios, either way round)."""
    ratio = boxes[:, None] / anchors[None]
    worst = np.maximum(ratio, 1 / ratio).max(axis=2)  # [M, N]
    best = worst.min(axis=1)
    return float((best < YOLO_ANCHOR_THRESHOLD).mean()), float((1 / best).mean())


def fit_yolo_anchors(
    boxes: np.ndarray, anchors: Sequence[Sequence[float]], iterations: int = 50
) -> tuple[YoloAnchors, YoloAnchors]:
    """The given (preset's) anchors and as many fitted to (M, 2) box sizes in input pixels."""
    given = np.asarray(anchors, dtype=np.float64)
    logs = np.log(boxes)
    order = np.argsort(logs.sum(axis=1))
    k = len(given)
    centres = logs[order[((np.arange(k) + 0.5) / k * len(order)).astype(int)]]
    for _ in range(iterations):
        nearest = ((logs[:, None] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        centres = np.array(
            [
                logs[nearest == j].mean(axis=0) if np.any(nearest == j) else centres[j]
                for j in range(k)
            ]
        )

    def scored(shapes: np.ndarray) -> YoloAnchors:
        rounded = sorted(((_tenth(w), _tenth(h)) for w, h in shapes), key=lambda wh: wh[0] * wh[1])
        return YoloAnchors(tuple(rounded), *yolo_score(boxes, np.asarray(rounded)))

    return scored(given), scored(np.exp(centres))


def _tenth(side: float) -> float:
    """An anchor side rounded to a tenth of a pixel, never to zero."""
    return max(0.1, round(float(side), 1))


def training_box_sizes(data: Path, input_size: int, max_images: int | None = None) -> np.ndarray:
    """(M, 2) sizes of the training boxes as the model sees them: the picture is scaled so its
    longer side is `input_size` (Model Garden's parser), boxes with it; from the first
    `max_images` training pictures if given."""
    from itertools import islice

    from tfod.data.dataset import load_summary
    from tfod.data.tfrecord import read_examples

    shards = [data / s for s in load_summary(data)["splits"]["train"]["shards"]]
    sizes = []
    for example in islice(read_examples(shards), max_images):
        scale = input_size / max(example.width, example.height)
        for x0, y0, x1, y1 in example.boxes:
            w, h = (x1 - x0) * example.width * scale, (y1 - y0) * example.height * scale
            if w > 0 and h > 0:
                sizes.append((w, h))
    return np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
