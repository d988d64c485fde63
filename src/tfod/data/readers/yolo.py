"""YOLO: one `class cx cy w h` line per box (fractions of the image size) in a .txt per image, or
YOLO-seg's `class x1 y1 x2 y2 x3 y3 ...` line per object (a polygon, its box the polygon's extent).

Labels sit where Ultralytics looks for them (the last `images` folder of the image path replaced
by `labels`) or beside the image. Class names come from `classes.txt` or a `data.yaml`'s `names`.
A folder named train/val/valid/test in the path assigns the split.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tfod.data.annotations import Box, Kind, Mask, Problem, Source, SourceImage, split_from_name
from tfod.data.readers.common import IMAGE_SUFFIXES, lexical, relative, walk_files
from tfod.errors import TfodError


def read_yolo(src: Path) -> Source:
    """Read a YOLO folder."""
    classes = _class_names(src)
    problems: list[Problem] = []
    images: list[SourceImage] = []
    used_labels: set[Path] = set()
    for path in walk_files(src, IMAGE_SUFFIXES):
        rel = relative(src, path)
        label = _label_file(src, path)
        boxes: list[Box] = []
        annotation = rel
        if label is not None:
            used_labels.add(label)
            annotation = relative(src, label)
            boxes = _parse(label, annotation, classes, problems)
        split = next((s for s in map(split_from_name, Path(rel).parts[:-1]) if s), None)
        images.append(
            SourceImage(lexical(path), rel, annotation, boxes, normalized=True, split=split)
        )
    for label in walk_files(src, frozenset({".txt"})):
        if label not in used_labels and "labels" in label.relative_to(src).parts[:-1]:
            problems.append(
                Problem(
                    Kind.MISSING_IMAGE,
                    relative(src, label),
                    "label file has no image beside it or under images/",
                )
            )
    if not images:
        raise TfodError("no images found in the YOLO folder", src)
    return Source("yolo", src, images, classes, problems)


def _class_names(src: Path) -> list[str]:
    listing = src / "classes.txt"
    if listing.is_file():
        lines = listing.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    for config in sorted([*src.glob("*.yaml"), *src.glob("*.yml")]):
        try:
            doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise TfodError(f"not valid YAML: {err}", config) from err
        names: object = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, list):
            return [str(n) for n in names]
        if isinstance(names, dict):
            try:
                ordered = sorted((int(k), str(v)) for k, v in names.items())
            except ValueError as err:
                raise TfodError("'names' keys must be class indices 0..N-1", config) from err
            if [k for k, _ in ordered] != list(range(len(ordered))):
                raise TfodError("'names' keys must be class indices 0..N-1", config)
            return [v for _, v in ordered]
    raise TfodError(
        "no class names: add classes.txt (one name per line) or a data.yaml with 'names'", src
    )


def _label_file(src: Path, image: Path) -> Path | None:
    parts = list(image.relative_to(src).parts)
    if "images" in parts[:-1]:
        index = len(parts) - 2 - parts[:-1][::-1].index("images")
        parts[index] = "labels"
        candidate = src.joinpath(*parts).with_suffix(".txt")
        if candidate.is_file():
            return candidate
    beside = image.with_suffix(".txt")
    return beside if beside.is_file() else None


def _parse(label: Path, annotation: str, classes: list[str], problems: list[Problem]) -> list[Box]:
    boxes: list[Box] = []
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(Kind.BAD_ANNOTATION, annotation, f"cannot read: {err}"))
        return boxes
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        try:
            index = int(fields[0])
            box, mask = _shape([float(v) for v in fields[1:]])
        except ValueError as err:
            problems.append(Problem(Kind.BAD_ANNOTATION, annotation, f"{where}: {err}"))
            continue
        if not 0 <= index < len(classes):
            problems.append(
                Problem(
                    Kind.UNKNOWN_CLASS,
                    annotation,
                    f"{where}: class index {index} but only {len(classes)} class names",
                )
            )
            continue
        boxes.append(Box(classes[index], *box, where=where, mask=mask))
    return boxes


def _shape(values: list[float]) -> tuple[tuple[float, float, float, float], Mask | None]:
    """A line's numbers after the class: a box (cx cy w h) or a polygon (x y pairs, 3 or more)."""
    if len(values) == 4:
        cx, cy, w, h = values
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), None
    if len(values) < 6 or len(values) % 2:
        raise ValueError(
            f"expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
            f"got {len(values) + 1} fields"
        )
    xs, ys = values[0::2], values[1::2]
    return (min(xs), min(ys), max(xs), max(ys)), Mask(polygons=(tuple(values),))
