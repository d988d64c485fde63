"""`tfod data convert`: an annotated image folder -> checked, sharded TFRecords and their metadata.

Output (all written into a temporary folder that replaces DIR only when complete):
`{train,val}-NNNNN-of-NNNNN.tfrecord`, `label_map.pbtxt`, `val_coco.json` and `dataset.json`
(counts, box sizes, a content fingerprint and every problem found). Class ids 1..N are the same in
all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.console import track
from tfod.data.annotations import Kind, Problem, Source, SourceImage, clean_class_name
from tfod.data.boxes import CheckedBox, check_boxes
from tfod.data.images import ImageError, PreparedImage, prepare_image
from tfod.data.labelmap import format_label_map
from tfod.data.readers import read_source
from tfod.data.readers.common import lexical
from tfod.data.tfrecord import ShardWriter, box_area, build_example
from tfod.errors import TfodError
from tfod.version import __version__

DATASET_JSON = "dataset.json"
LABEL_MAP = "label_map.pbtxt"
VAL_COCO_JSON = "val_coco.json"
MARKER = ".tfod-dataset"  # holds the dataset's fingerprint: proof that tfod wrote the folder
SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.2
SHARD_BYTES = 128 * 2**20
DIFFICULT_POLICIES = ("ignore", "keep", "drop")
# COCO's box-size buckets, in pixels of area.
SMALL_AREA, MEDIUM_AREA = 32**2, 96**2


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert.

    Args:
        format: "voc", "coco", "yolo", "csv" or "auto" (detected from the files).
        val_fraction: fraction of images for validation, split by seed and image content. None:
            keep the source's own train/val split if it has one, else use 0.2.
        seed: seed of the split.
        strict: any problem is an error and nothing is written.
        workers: processes decoding images (default: one per core).
        classes: class names in id order; boxes of other classes are reported and dropped.
            Default: the source's categories (COCO, YOLO) or the sorted names found (VOC, CSV).
        difficult: VOC `difficult` boxes: "ignore" (kept as crowd regions: not trained on, not
            counted as misses in COCO evaluation), "keep" (ordinary boxes) or "drop".
        progress: show a progress bar.
    """

    format: str = "auto"
    val_fraction: float | None = None
    seed: int = 0
    strict: bool = False
    workers: int | None = None
    classes: tuple[str, ...] | None = None
    difficult: str = "ignore"
    progress: bool = True


def convert(src: Path, out: Path, options: ConvertOptions | None = None) -> dict[str, Any]:
    """Convert the annotated images in `src` into a tfod dataset folder `out`.

    Returns:
        The content of `dataset.json`.

    Raises:
        TfodError: unreadable source, bad options, an output folder tfod did not write, or (with
            `strict`) any problem in the data.
    """
    options = options or ConvertOptions()
    _check_options(options)
    check_out(out, src)
    source = read_source(src, options.format)
    classes = _classes(source, options.classes)
    problems = list(source.problems)
    images = _deduplicate(_apply_difficult(source.images, options.difficult), problems)
    splits, split_note = _assign_splits(images, options)
    class_ids = {name: i for i, name in enumerate(classes, start=1)}
    workers = options.workers or os.cpu_count() or 1

    stats = {split: SplitStats() for split in SPLITS}
    coco = CocoBuilder(classes)
    fingerprint = hashlib.sha256()
    changes: Counter[str] = Counter()
    with atomic.atomic_directory(out) as tmp:
        writers = {
            split: ShardWriter(tmp, split, _shard_count(images, splits, split)) for split in SPLITS
        }
        tasks = [_Task(image, class_ids) for image, _ in images]
        outcomes = track(_run(tasks, workers), len(tasks), "Converting", options.progress)
        source_id = 0
        try:
            for (image, _), split, outcome in zip(images, splits, outcomes, strict=True):
                problems.extend(outcome.problems)
                if outcome.image is None:
                    continue
                source_id += 1
                record = build_example(source_id, image.rel, outcome.image, outcome.boxes)
                writers[split].write(record)
                fingerprint.update(len(record).to_bytes(8, "little") + record)
                stats[split].add(outcome.image, outcome.boxes)
                changes.update(outcome.image.changes)
                if split == "val":
                    coco.add(source_id, image.rel, outcome.image, outcome.boxes)
        finally:
            for writer in writers.values():
                writer.close()
        if options.strict:
            raise_if_problems(problems, src)
        raise_if_empty(stats, problems, src, out)
        label_map = format_label_map(classes)
        fingerprint.update(label_map.encode())
        (tmp / LABEL_MAP).write_text(label_map, encoding="utf-8")
        atomic.write_json(tmp / VAL_COCO_JSON, coco.document())
        summary = dataset_summary(
            {"path": str(source.root.resolve()), "format": source.format},
            classes,
            source.original_ids,
            {"method": split_note, "seed": options.seed, "val_fraction": options.val_fraction},
            stats,
            {split: [p.name for p in writer.paths] for split, writer in writers.items()},
            problems,
            fingerprint,
            difficult=options.difficult,
            changes=changes,
        )
        write_metadata(tmp, summary)
    return summary


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


def _check_options(options: ConvertOptions) -> None:
    if options.val_fraction is not None and not 0.0 <= options.val_fraction < 1.0:
        raise TfodError(f"--val-fraction must be in [0, 1), got {options.val_fraction}")
    if options.workers is not None and options.workers < 1:
        raise TfodError(f"--workers must be at least 1, got {options.workers}")
    if options.difficult not in DIFFICULT_POLICIES:
        raise TfodError(
            f"--difficult must be one of {', '.join(DIFFICULT_POLICIES)}, got {options.difficult!r}"
        )


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


def _classes(source: Source, wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is not None:
        names = [clean_class_name(n) for n in wanted if clean_class_name(n)]
        duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
        if not names or duplicates:
            raise TfodError(
                f"--classes must list distinct names (repeated: {', '.join(duplicates)})"
            )
        return names
    if not source.classes:
        raise TfodError("no labelled boxes found: nothing to train a detector on", source.root)
    return list(source.classes)


def _apply_difficult(images: list[SourceImage], policy: str) -> list[SourceImage]:
    if policy == "keep":
        return images
    out = []
    for image in images:
        if policy == "drop":
            boxes = [b for b in image.boxes if not b.difficult]
        else:
            boxes = [
                dataclasses.replace(b, is_crowd=True) if b.difficult else b for b in image.boxes
            ]
        out.append(dataclasses.replace(image, boxes=boxes))
    return out


def _deduplicate(
    images: list[SourceImage], problems: list[Problem]
) -> list[tuple[SourceImage, str]]:
    """Hash each image file; keep the first of identical files, report the rest."""
    seen: dict[str, str] = {}
    kept: list[tuple[SourceImage, str]] = []
    for image in sorted(images, key=lambda i: (i.rel, i.annotation)):
        try:
            digest = hashlib.sha256(image.path.read_bytes()).hexdigest()
        except OSError as err:
            problems.append(
                Problem(
                    Kind.UNREADABLE_IMAGE, image.annotation, f"{image.rel}: {err.strerror or err}"
                )
            )
            continue
        if digest in seen:
            lost = f" ({len(image.boxes)} boxes of this entry not used)" if image.boxes else ""
            problems.append(
                Problem(
                    Kind.DUPLICATE_IMAGE,
                    image.annotation,
                    f"{image.rel} has the same content as {seen[digest]}{lost}",
                )
            )
            continue
        seen[digest] = image.rel
        kept.append((image, digest))
    return kept


def _assign_splits(
    images: list[tuple[SourceImage, str]], options: ConvertOptions
) -> tuple[list[str], str]:
    """The split of every image, and a sentence saying how it was made."""
    given = [image.split for image, _ in images]
    if options.val_fraction is None and {"train", "val"} <= set(given):
        rest = [i for i, s in enumerate(given) if s is None]
        seeded = _seeded_split([images[i][1] for i in rest], DEFAULT_VAL_FRACTION, options.seed)
        for i, split in zip(rest, seeded, strict=True):
            given[i] = split
        note = "the source's own train/val split"
        if rest:
            note += f"; {len(rest)} images it does not assign were split by seed {options.seed}"
        return [s or "train" for s in given], note
    fraction = DEFAULT_VAL_FRACTION if options.val_fraction is None else options.val_fraction
    note = f"{fraction:g} of the images for validation, chosen by seed {options.seed}"
    if options.val_fraction is None and any(given):
        note += " (the source's own split lacks a train or a val part)"
    return _seeded_split([digest for _, digest in images], fraction, options.seed), note


def _seeded_split(keys: list[str], fraction: float, seed: int) -> list[str]:
    """Deterministic split by seed and image content: the same images always split the same way."""
    order = sorted(
        range(len(keys)), key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).digest()
    )
    n_val = round(len(keys) * fraction)
    if fraction > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val = set(order[:n_val])
    return ["val" if i in val else "train" for i in range(len(keys))]


def _shard_count(images: list[tuple[SourceImage, str]], splits: list[str], split: str) -> int:
    sizes = [
        img.path.stat().st_size for (img, _), s in zip(images, splits, strict=True) if s == split
    ]
    return max(1, min(len(sizes), math.ceil(sum(sizes) / SHARD_BYTES)))


def raise_if_problems(problems: list[Problem], src: Path) -> None:
    if not problems:
        return
    counts = Counter(p.kind.value for p in problems)
    listed = "\n".join(f"  {p.kind.value}: {p.file}: {p.detail}" for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    raise TfodError(
        f"--strict: {len(problems)} problem(s) ({kinds}); "
        f"nothing was written. Fix them, or convert without --strict to skip and report them.\n"
        f"{listed}{more}",
        src,
    )


@dataclass(frozen=True)
class _Task:
    image: SourceImage
    class_ids: dict[str, int]


@dataclass(frozen=True)
class _Outcome:
    image: PreparedImage | None
    boxes: list[CheckedBox]
    problems: list[Problem]


def _process(task: _Task) -> _Outcome:
    """Worker: read, normalise and check one image (Pillow and NumPy only, no TensorFlow)."""
    image = task.image
    lost = f" ({len(image.boxes)} boxes lost)" if image.boxes else ""
    try:
        prepared = prepare_image(image.path.read_bytes())
    except (OSError, ImageError) as err:
        detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        problem = Problem(Kind.UNREADABLE_IMAGE, image.annotation, f"{image.rel}: {detail}{lost}")
        return _Outcome(None, [], [problem])
    boxes, problems = check_boxes(
        image, prepared.width, prepared.height, task.class_ids, prepared.orientation
    )
    return _Outcome(prepared, boxes, problems)


def _run(tasks: list[_Task], workers: int) -> Iterator[_Outcome]:
    """Process `tasks` in order, in `workers` processes (1: in this process)."""
    if workers == 1 or len(tasks) < 2:
        yield from map(_process, tasks)
        return
    # spawn, not fork: the parent may hold TensorFlow's threads, which fork would copy broken.
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_die_with, initargs=(os.getpid(),)
    ) as pool:
        yield from pool.map(_process, tasks, chunksize=4)


def _die_with(parent: int) -> None:
    """Worker initializer: be killed when the converting process dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers end when the pool's pipe breaks
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@dataclass
class SplitStats:
    images: int = 0
    boxes: int = 0
    images_without_boxes: int = 0
    crowd_boxes: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    box_sizes: Counter[str] = field(default_factory=Counter)

    def add(self, image: PreparedImage, boxes: Iterable[CheckedBox]) -> None:
        self.images += 1
        count = 0
        for box in boxes:
            count += 1
            self.per_class[box.label] += 1
            self.crowd_boxes += int(box.is_crowd)
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
