"""COCO JSON: `images`, `annotations` (bbox = [x, y, width, height] in pixels) and `categories`.

An annotation's `segmentation` (polygons, or RLE with list or compressed counts) is its mask.

SRC is a JSON file or a folder holding them (`annotations/*.json`, `*.json`, or `*/…json` as
Roboflow exports). Category ids need not be contiguous: classes are numbered 1..N in the order of
their original ids, and the mapping is recorded.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from tfod.data.annotations import Box, Kind, Mask, Problem, Source, SourceImage, split_from_name
from tfod.data.readers.common import ImageLocator, relative
from tfod.errors import TfodError


def read_coco(src: Path) -> Source:
    """Read one COCO JSON file, or every COCO JSON file of a folder."""
    root, files = _find_files(src)
    problems: list[Problem] = []
    locator = ImageLocator(root, problems)
    documents = [(f, _load(f)) for f in files]
    original_ids = _categories(documents)
    by_id = {cid: name for name, cid in original_ids.items()}
    images: list[SourceImage] = []
    for path, doc in documents:
        rel_json = relative(root, path)
        split = split_from_name(path.stem) or split_from_name(path.parent.name)
        boxes = _annotations(doc, by_id, rel_json, problems)
        suffix = path.stem.split("_")[-1]
        bases = [path.parent, path.parent / "images", root, root / "images", root / suffix]
        shared = _shared_ids(doc["images"])
        for image_id, count in shared.items():
            lost = len(boxes.pop(image_id, []))
            problems.append(
                Problem(
                    Kind.DUPLICATE_ID,
                    rel_json,
                    f"image id {image_id!r} is given to {count} images; which one its {lost} "
                    "annotation(s) belong to is ambiguous",
                )
            )
        for entry in doc["images"]:
            image_id = entry.get("id") if isinstance(entry, dict) else None
            if image_id is None:
                problems.append(
                    Problem(Kind.BAD_ANNOTATION, rel_json, f"image entry {entry!r} has no id")
                )
                continue
            if _key(image_id) in shared:
                continue
            image_boxes = boxes.pop(_key(image_id), [])
            found = locator.locate(
                str(entry.get("file_name", "")), bases, rel_json, len(image_boxes)
            )
            if found is None:
                continue
            size = _int(entry.get("width")), _int(entry.get("height"))
            images.append(
                SourceImage(
                    found[0],
                    found[1],
                    rel_json,
                    image_boxes,
                    size if size[0] > 0 and size[1] > 0 else None,
                    split=split,
                )
            )
        for image_id, orphans in boxes.items():
            problems.append(
                Problem(
                    Kind.BAD_ANNOTATION,
                    rel_json,
                    f"{len(orphans)} annotation(s) for image id {image_id}, which 'images' lacks",
                )
            )
    return Source("coco", root, images, list(original_ids), problems, original_ids)


def _key(image_id: Any) -> Any:
    """A hashable form of an image id (a malformed file may use a list)."""
    return image_id if isinstance(image_id, (int, str, float)) else json.dumps(image_id)


def _shared_ids(entries: list[Any]) -> dict[Any, int]:
    """Image ids that more than one image entry carries, with how many carry each."""
    counts = Counter(
        _key(e["id"]) for e in entries if isinstance(e, dict) and e.get("id") is not None
    )
    return {image_id: n for image_id, n in counts.items() if n > 1}


def _find_files(src: Path) -> tuple[Path, list[Path]]:
    if src.is_file():
        return src.parent, [src]
    for pattern in ("annotations/*.json", "*.json", "*/*.json"):
        files = sorted(src.glob(pattern))
        if files:
            return src, files
    raise TfodError(
        "no COCO JSON file found (looked for annotations/*.json, *.json, */*.json)", src
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TfodError(f"cannot read COCO JSON: {err}", path) from err
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise TfodError("not a COCO detection file: no 'images' list", path)
    if not isinstance(doc.get("categories"), list):
        raise TfodError("not a COCO detection file: no 'categories' list", path)
    return doc


def _categories(documents: list[tuple[Path, dict[str, Any]]]) -> dict[str, int]:
    """Class name -> original category id, ordered by id, consistent across all files."""
    names: dict[int, str] = {}
    for path, doc in documents:
        for cat in doc["categories"]:
            try:
                cid, name = int(cat["id"]), str(cat["name"])
            except (KeyError, TypeError, ValueError) as err:
                raise TfodError(
                    f"category {cat!r} needs an integer 'id' and a 'name'", path
                ) from err
            if names.setdefault(cid, name) != name:
                raise TfodError(
                    f"category id {cid} is {name!r} here but {names[cid]!r} in another file", path
                )
    ordered = {names[cid]: cid for cid in sorted(names)}
    if len(ordered) != len(names):
        raise TfodError("two category ids share one name; give each class one id", documents[0][0])
    return ordered


def _annotations(
    doc: dict[str, Any], by_id: dict[int, str], rel_json: str, problems: list[Problem]
) -> dict[Any, list[Box]]:
    boxes: dict[Any, list[Box]] = {}
    for index, ann in enumerate(doc.get("annotations") or []):
        where = f"annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            category = int(ann["category_id"])
            image_id = ann["image_id"]
        except (KeyError, TypeError, ValueError) as err:
            problems.append(
                Problem(
                    Kind.BAD_ANNOTATION,
                    rel_json,
                    f"{where}: needs image_id, category_id and a 4-number bbox ({err!r})",
                )
            )
            continue
        if category not in by_id:
            problems.append(
                Problem(
                    Kind.UNKNOWN_CLASS,
                    rel_json,
                    f"{where}: category_id {category} is not in 'categories'",
                )
            )
            continue
        crowd = bool(ann.get("iscrowd", 0))
        box = Box(
            by_id[category], x, y, x + w, y + h, where, crowd, mask=_mask(ann.get("segmentation"))
        )
        boxes.setdefault(_key(image_id), []).append(box)
    return boxes


def _mask(segmentation: Any) -> Mask | None:
    """An annotation's `segmentation` as a `Mask`; None where it has none (absent or empty)."""
    if segmentation is None or segmentation == []:
        return None
    if isinstance(segmentation, dict):
        return Mask(rle=segmentation)
    if isinstance(segmentation, list) and all(isinstance(ring, list) for ring in segmentation):
        try:
            return Mask(polygons=tuple(tuple(float(v) for v in ring) for ring in segmentation))
        except (TypeError, ValueError):
            return Mask(problem="a polygon's coordinates are not all numbers")
    return Mask(
        problem=f"segmentation must be polygons or an RLE, got {type(segmentation).__name__}"
    )


def _int(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) else 0
