"""One in-memory annotation model that every reader produces, and the problems found on the way.

Readers turn a source folder into a `Source`; the converter checks it against the real images and
writes TFRecords. Nothing is dropped without a `Problem` saying what, where and why.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Kind(StrEnum):
    """Every kind of problem the converter reports, with what it does about it."""

    BAD_ANNOTATION = "bad_annotation"
    MISSING_IMAGE = "missing_image"
    UNREADABLE_IMAGE = "unreadable_image"
    PATH_ESCAPES_SOURCE = "path_escapes_source"
    DUPLICATE_IMAGE = "duplicate_image"
    SIZE_MISMATCH = "size_mismatch"
    EXIF_ROTATED = "exif_rotated"
    DUPLICATE_ID = "duplicate_id"
    BAD_SOURCE_ID = "bad_source_id"
    BAD_CLASS_NAME = "bad_class_name"
    UNKNOWN_CLASS = "unknown_class"
    INVALID_BOX = "invalid_box"
    BOX_OUTSIDE = "box_outside"
    BOX_CLIPPED = "box_clipped"
    INVALID_MASK = "invalid_mask"
    MISSING_MASK = "missing_mask"
    MASK_CLIPPED = "mask_clipped"
    SELF_INTERSECTING_MASK = "self_intersecting_mask"

    @property
    def action(self) -> str:
        """What the converter did about a problem of this kind."""
        return _ACTIONS[self]


_ACTIONS = {
    Kind.BAD_ANNOTATION: "annotation entry skipped",
    Kind.MISSING_IMAGE: "image skipped",
    Kind.UNREADABLE_IMAGE: "image skipped",
    Kind.PATH_ESCAPES_SOURCE: "image rejected",
    Kind.DUPLICATE_IMAGE: "later copy skipped",
    Kind.SIZE_MISMATCH: "boxes rescaled to the real size",
    Kind.EXIF_ROTATED: "boxes turned with the image",
    Kind.DUPLICATE_ID: "every image with that id skipped",
    Kind.BAD_SOURCE_ID: "image given a new numeric id",
    Kind.BAD_CLASS_NAME: "control characters replaced by spaces",
    Kind.UNKNOWN_CLASS: "box dropped",
    Kind.INVALID_BOX: "box dropped",
    Kind.BOX_OUTSIDE: "box dropped",
    Kind.BOX_CLIPPED: "box clipped to the image",
    Kind.INVALID_MASK: "box kept, its rectangle as its mask",
    Kind.MISSING_MASK: "box kept, its rectangle as its mask",
    Kind.MASK_CLIPPED: "mask clipped to the image",
    Kind.SELF_INTERSECTING_MASK: "polygon filled as drawn (even-odd)",
}


@dataclass(frozen=True)
class Problem:
    """One problem in the source data.

    Args:
        kind: what kind of problem.
        file: the file concerned, relative to the source folder.
        detail: what exactly is wrong (line, object, values).
    """

    kind: Kind
    file: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "file": self.file, "detail": self.detail}


@dataclass(frozen=True)
class Mask:
    """An object's outline as the annotation gives it, in its box's coordinates.

    Args:
        polygons: rings of flat (x0, y0, x1, y1, ...) points (COCO, YOLO-seg).
        rle: COCO run-length encoding of the annotated image: {"size": [h, w], "counts": ...}.
        instance: an index image of the annotated image and the object's value in it (VOC's
            SegmentationObject PNG).
        png: an image of the object alone, its nonzero pixels the object (the Object Detection
            API's `image/object/mask`).
        problem: why the annotation's mask could not be read (it becomes an `INVALID_MASK`).
    """

    polygons: tuple[tuple[float, ...], ...] = ()
    rle: dict[str, Any] | None = None
    instance: tuple[Path, int] | None = None
    png: bytes | None = None
    problem: str = ""


@dataclass(frozen=True)
class Box:
    """A box as the annotation gives it.

    Coordinates are pixels of the annotated image, or fractions of its size when the owning
    `SourceImage.normalized` is set (YOLO). `where` locates it for problem messages.
    """

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    where: str
    is_crowd: bool = False
    difficult: bool = False
    truncated: bool = False
    mask: Mask | None = None


@dataclass
class SourceImage:
    """An image and its boxes, as one annotation source describes it.

    Args:
        path: the image file (absolute, inside the source folder).
        rel: the image path relative to the source folder, POSIX style.
        annotation: the annotation file that describes it, relative to the source folder.
        boxes: its boxes.
        size: (width, height) as annotated, if the format records it.
        normalized: the boxes are fractions of the image size.
        split: "train" or "val" if the source assigns a split.
    """

    path: Path
    rel: str
    annotation: str
    boxes: list[Box] = field(default_factory=list)
    size: tuple[int, int] | None = None
    normalized: bool = False
    split: str | None = None


@dataclass
class Source:
    """What a reader found: images, ordered class names (id = position + 1) and problems.

    `original_ids` maps class names to the ids the source used, where it had its own (COCO).
    """

    format: str
    root: Path
    images: list[SourceImage]
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    original_ids: dict[str, int] = field(default_factory=dict)


SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "val",
}
"""Split names found in sources, mapped to tfod's two splits (a source's test split validates)."""


def split_from_name(name: str) -> str | None:
    """Guess a split from a file or folder name such as `instances_val2017` or `train_labels`."""
    for token in re.findall(r"[a-z]+", name.lower()):
        if token in SPLIT_NAMES:
            return SPLIT_NAMES[token]
    return None


def clean_class_name(name: str) -> str:
    """`name` with every control character (newline, tab, NUL, ...) turned into a space, runs of
    spaces collapsed and the ends stripped: one line of a label file, one id."""
    spaced = "".join(" " if unicodedata.category(c).startswith("C") else c for c in name)
    return " ".join(spaced.split())


def clean_class_names(source: Source) -> Source:
    """`source` with its class names (and its boxes' labels) cleaned by `clean_class_name`; each
    name changed is a reported problem. Two names that clean to the same one stay one class."""
    renamed = {n: clean_class_name(n) for n in source.classes if clean_class_name(n) != n}
    renamed.update(
        {
            b.label: clean_class_name(b.label)
            for image in source.images
            for b in image.boxes
            if clean_class_name(b.label) != b.label
        }
    )
    if not renamed:
        return source
    problems = [
        Problem(Kind.BAD_CLASS_NAME, "", f"class name {old!r} -> {new!r}")
        for old, new in renamed.items()
    ]
    images = [
        dataclasses.replace(
            image,
            boxes=[
                dataclasses.replace(b, label=renamed.get(b.label, b.label)) for b in image.boxes
            ],
        )
        for image in source.images
    ]
    classes = list(dict.fromkeys(renamed.get(n, n) for n in source.classes))
    original_ids = {renamed.get(n, n): i for n, i in source.original_ids.items()}
    return dataclasses.replace(
        source,
        images=images,
        classes=classes,
        problems=[*source.problems, *problems],
        original_ids=original_ids,
    )
