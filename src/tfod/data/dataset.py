"""The dataset folder tfod writes and reads: its file names and marker, `dataset.json` (counts,
box sizes, fingerprint, problems), the validation split's COCO ground truth, and the rule that
only an empty folder or one tfod wrote may be replaced. `tfod data convert` and `tfod data
import-tfrecord` both write it through this module.

    DIR/{train,val}-NNNNN-of-NNNNN.tfrecord  label_map.pbtxt  val_coco.json  dataset.json
    DIR/.tfod-dataset  (the fingerprint: proof that tfod wrote the folder)
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.data.annotations import Problem
from tfod.data.boxes import CheckedBox
from tfod.data.images import PreparedImage
from tfod.data.labelmap import format_label_map
from tfod.data.readers.common import lexical
from tfod.data.tfrecord import box_area
from tfod.errors import TfodError
from tfod.version import __version__

DATASET_JSON = "dataset.json"
LABEL_MAP = "label_map.pbtxt"
VAL_COCO_JSON = "val_coco.json"
MARKER = ".tfod-dataset"  # holds the dataset's fingerprint: proof that tfod wrote the folder
SPLITS = ("train", "val")
# COCO's box-size buckets, in pixels of area.
SMALL_AREA, MEDIUM_AREA = 32**2, 96**2


def count_record(fingerprint: Any, record: bytes) -> None:
    """Add a serialized Example to the dataset's content fingerprint (a hashlib sha256)."""
    fingerprint.update(len(record).to_bytes(8, "little") + record)


def write_label_map_and_truth(
    folder: Path, classes: list[str], coco: CocoBuilder, fingerprint: Any
) -> None:
    """`label_map.pbtxt` (its text added to the fingerprint) and `val_coco.json`."""
    text = format_label_map(classes)
    fingerprint.update(text.encode())
    (folder / LABEL_MAP).write_text(text, encoding="utf-8")
    atomic.write_json(folder / VAL_COCO_JSON, coco.document())


def write_metadata(folder: Path, summary: dict[str, Any]) -> None:
    """Write `dataset.json` and the marker that proves tfod wrote `folder`."""
    atomic.write_json(folder / DATASET_JSON, summary)
    atomic.write_json(folder / MARKER, {"fingerprint": summary["fingerprint"]})


def load_summary(directory: Path) -> dict[str, Any]:
    """A dataset folder's `dataset.json`, or a TfodError saying how to make one."""
    if not directory.is_dir():
        raise TfodError(
            "dataset folder does not exist; make it with `tfod data convert` or `tfod data demo`",
            directory,
        )
    path = directory / DATASET_JSON
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TfodError(
            "no dataset.json: not a tfod dataset folder (make one with `tfod data convert`)",
            directory,
        ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise TfodError(f"cannot read dataset.json: {err}", path) from err
    return summary


_TFOD_ENTRY = re.compile(
    rf"^((train|val)-\d{{5}}-of-\d{{5}}\.tfrecord|{re.escape(DATASET_JSON)}|{re.escape(LABEL_MAP)}"
    rf"|{re.escape(VAL_COCO_JSON)}|{re.escape(MARKER)}|plots)$"
)


def check_out(out: Path, src: Path) -> None:
    """Refuse an `out` whose replacement could lose data: the source folder itself, a folder that
    holds it or (for a source folder) lies inside it, or a non-empty folder that is not provably a
    dataset tfod wrote. Both the paths as written and as their links resolve are compared."""
    if not src.exists():
        raise TfodError("does not exist", src)
    if out.exists() and not out.is_dir():
        raise TfodError("exists and is not a folder", out)
    source_root = src if src.is_dir() else src.parent
    for target, source in (
        (lexical(out), lexical(source_root)),
        (Path(os.path.realpath(out)), Path(os.path.realpath(source_root))),
    ):
        if target == source or source.is_relative_to(target):
            raise TfodError(
                f"--out would replace a folder holding the source {src}; choose a folder outside it",
                out,
            )
        if src.is_dir() and target.is_relative_to(source):
            raise TfodError(
                f"--out lies inside the source folder {src}; choose a folder outside it (the next "
                "conversion would read its own output)",
                out,
            )
    if out.is_dir() and any(out.iterdir()):
        reason = _not_a_dataset(out)
        if reason:
            raise TfodError(
                f"is not empty and is not a dataset tfod wrote ({reason}); tfod replaces only its "
                "own dataset folders. Choose a new --out folder.",
                out,
            )


def _not_a_dataset(folder: Path) -> str | None:
    """Why `folder` is not provably a dataset tfod wrote (None: it is)."""
    foreign = sorted(p.name for p in folder.iterdir() if not _TFOD_ENTRY.match(p.name))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds {', '.join(foreign[:3])}{more}"
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        summary = json.loads((folder / DATASET_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {MARKER} and {DATASET_JSON}"
    if not isinstance(marker, dict) or not isinstance(summary, dict):
        return f"{MARKER} and {DATASET_JSON} must be JSON objects"
    if marker.get("fingerprint") != summary.get("fingerprint"):
        return f"{MARKER} does not match {DATASET_JSON}"
    return None


def raise_if_empty(
    stats: dict[str, SplitStats], problems: list[Problem], src: Path, out: Path
) -> None:
    """A dataset without images or without boxes trains nothing: an error that writes nothing."""
    images = sum(s.images for s in stats.values())
    boxes = sum(s.boxes for s in stats.values())
    if images and boxes:
        return
    counts = Counter(p.kind.value for p in problems)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    first = f" First: {problems[0].file}: {problems[0].detail}." if problems else ""
    what = "no usable image" if not images else f"{images} image(s) but no usable box"
    raise TfodError(
        f"{what}: nothing to train a detector on; {out} was left as it was. "
        f"Problems found: {kinds}.{first}",
        src,
    )


@dataclass
class SplitStats:
    images: int = 0
    boxes: int = 0
    images_without_boxes: int = 0
    crowd_boxes: int = 0
    masks: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    box_sizes: Counter[str] = field(default_factory=Counter)

    def add(self, image: PreparedImage, boxes: Iterable[CheckedBox]) -> None:
        self.images += 1
        count = 0
        for box in boxes:
            count += 1
            self.per_class[box.label] += 1
            self.crowd_boxes += int(box.is_crowd)
            self.masks += int(box.mask is not None and not box.mask.rectangle)
            area = box_area(box, image.width, image.height)
            size = "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"
            self.box_sizes[size] += 1
        self.boxes += count
        self.images_without_boxes += int(count == 0)


class CocoBuilder:
    """The validation split's ground truth as a COCO detection JSON (image ids = source ids)."""

    def __init__(self, classes: list[str]) -> None:
        self.categories = [
            {"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(classes, start=1)
        ]
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add(self, image_id: int, rel: str, image: PreparedImage, boxes: list[CheckedBox]) -> None:
        w, h = image.width, image.height
        self.images.append({"id": image_id, "file_name": rel, "width": w, "height": h})
        for box in boxes:
            x, y = box.xmin * w, box.ymin * h
            bw, bh = (box.xmax - box.xmin) * w, (box.ymax - box.ymin) * h
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": box.label_id,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(box.is_crowd),
                    **({"segmentation": box.mask.rle} if box.mask is not None else {}),
                }
            )

    def document(self) -> dict[str, Any]:
        return {
            "info": {"description": "validation split ground truth written by tfod"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }


def dataset_summary(
    source: dict[str, Any],
    classes: list[str],
    original_ids: dict[str, int],
    split: dict[str, Any],
    stats: dict[str, SplitStats],
    shards: dict[str, list[str]],
    problems: list[Problem],
    fingerprint: Any,
    difficult: str,
    changes: Counter[str],
) -> dict[str, Any]:
    """The content of `dataset.json` (`shards`: file names in the dataset folder, per split)."""
    splits = {}
    for name, s in stats.items():
        splits[name] = {
            "images": s.images,
            "boxes": s.boxes,
            "images_without_boxes": s.images_without_boxes,
            "crowd_boxes": s.crowd_boxes,
            "masks": s.masks,
            "per_class": {c: s.per_class.get(c, 0) for c in classes},
            "box_sizes": {k: s.box_sizes.get(k, 0) for k in ("small", "medium", "large")},
            "shards": shards[name],
        }
    return {
        "tfod_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "fingerprint": "sha256:" + fingerprint.hexdigest(),
        "classes": [
            {
                "id": i,
                "name": n,
                **({"original_id": original_ids[n]} if n in original_ids else {}),
            }
            for i, n in enumerate(classes, start=1)
        ],
        "split": split,
        "difficult": difficult,
        "splits": splits,
        "images_changed": dict(sorted(changes.items())),
        "problems": {
            "counts": {k.value: n for k, n in sorted(Counter(p.kind for p in problems).items())},
            "items": [p.as_dict() for p in problems],
        },
    }
