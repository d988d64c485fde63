"""`tfod data convert`: an annotated image folder -> checked, sharded TFRecords and their metadata.

Output (all written into a temporary folder that replaces DIR only when complete):
`{train,val}-NNNNN-of-NNNNN.tfrecord`, `label_map.pbtxt`, `val_coco.json` and `dataset.json`
(counts, box sizes, a content fingerprint and every problem found). Class ids 1..N are the same in
all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.console import track
from tfod.data.annotations import Kind, Problem, Source, SourceImage, clean_class_name
from tfod.data.boxes import CheckedBox, check_boxes
from tfod.data.dataset import (
    SPLITS,
    CocoBuilder,
    SplitStats,
    check_out,
    count_record,
    dataset_summary,
    raise_if_empty,
    write_label_map_and_truth,
    write_metadata,
)
from tfod.data.images import ImageError, PreparedImage, prepare_image
from tfod.data.readers import read_source
from tfod.data.tfrecord import ShardWriter, build_example
from tfod.errors import TfodError

DEFAULT_VAL_FRACTION = 0.2
SHARD_BYTES = 128 * 2**20
DIFFICULT_POLICIES = ("ignore", "keep", "drop")


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
        masks = any(box.mask is not None for image, _ in images for box in image.boxes)
        tasks = [_Task(image, class_ids, masks) for image, _ in images]
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
                count_record(fingerprint, record)
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
        write_label_map_and_truth(tmp, classes, coco, fingerprint)
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


def _check_options(options: ConvertOptions) -> None:
    if options.val_fraction is not None and not 0.0 <= options.val_fraction < 1.0:
        raise TfodError(f"--val-fraction must be in [0, 1), got {options.val_fraction}")
    if options.workers is not None and options.workers < 1:
        raise TfodError(f"--workers must be at least 1, got {options.workers}")
    if options.difficult not in DIFFICULT_POLICIES:
        raise TfodError(
            f"--difficult must be one of {', '.join(DIFFICULT_POLICIES)}, got {options.difficult!r}"
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
    masks: bool  # the source has masks: every box kept carries one


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
        image, prepared.width, prepared.height, task.class_ids, prepared.orientation, task.masks
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
