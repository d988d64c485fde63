"""CSV: `filename,width,height,class,xmin,ymin,xmax,ymax`, one row per box (the layout of the
Object Detection API tutorial's `train_labels.csv` / `test_labels.csv`). Columns are found by name;
width and height may be absent; a row with an empty class is an image without boxes. The file name
assigns the split (train_labels.csv, test_labels.csv)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tfod.data.annotations import Box, Kind, Problem, Source, SourceImage, split_from_name
from tfod.data.readers.common import ImageLocator, relative
from tfod.errors import TfodError

REQUIRED = ("filename", "class", "xmin", "ymin", "xmax", "ymax")


def read_csv(src: Path) -> Source:
    """Read one CSV file, or every CSV file of a folder."""
    root, files = (src.parent, [src]) if src.is_file() else (src, sorted(src.glob("*.csv")))
    if not files:
        raise TfodError("no CSV file found", src)
    problems: list[Problem] = []
    locator = ImageLocator(root, problems)
    images: list[SourceImage] = []
    for path in files:
        rel_csv = relative(root, path)
        split = split_from_name(path.stem)
        rows = _rows(path, rel_csv, problems)
        bases = [path.parent, path.parent / "images", root, root / "images"]
        for name, (size, boxes) in rows.items():
            found = locator.locate(name, bases, rel_csv, len(boxes))
            if found is not None:
                images.append(SourceImage(found[0], found[1], rel_csv, boxes, size, split=split))
    classes = sorted({b.label for image in images for b in image.boxes})
    return Source("csv", root, images, classes, problems)


def _rows(
    path: Path, rel_csv: str, problems: list[Problem]
) -> dict[str, tuple[tuple[int, int] | None, list[Box]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise TfodError(f"cannot read CSV: {err}", path) from err
    reader = csv.DictReader(text.splitlines())
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise TfodError(
            f"missing column(s) {', '.join(missing)}; expected a header "
            "filename,width,height,class,xmin,ymin,xmax,ymax",
            path,
        )
    out: dict[str, tuple[tuple[int, int] | None, list[Box]]] = {}
    for number, row in enumerate(reader, start=2):
        value = {key: (row.get(col) or "").strip() for key, col in columns.items()}
        where = f"line {number}"
        name = value["filename"]
        boxes = out.setdefault(name, (_size(value), []))[1]
        if not value["class"]:
            continue
        try:
            x0, y0, x1, y1 = (float(value[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.append(
                Problem(Kind.BAD_ANNOTATION, rel_csv, f"{where}: coordinates must be numbers")
            )
            continue
        boxes.append(Box(value["class"], x0, y0, x1, y1, where=where))
    return out


def _size(value: dict[str, str]) -> tuple[int, int] | None:
    try:
        width, height = float(value.get("width", "")), float(value.get("height", ""))
    except ValueError:
        return None
    if math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0:
        return int(width), int(height)
    return None
