"""`tfod data import-tfrecord`: Object Detection API TFRecords -> a tfod dataset, image bytes kept.

Every Example is read and checked the way `tfod data convert` checks annotations (missing keys,
undecodable images, sizes, bad boxes, class ids not in the label map, source ids). The dataset
folder gets `dataset.json`, `val_coco.json`, `label_map.pbtxt` and the shards under tfod's names:

- by reference (default): symbolic links to the original record files, which Model Garden then
  reads as they are. Only records that need no change can be referenced; anything a reader would
  trip on (a bad box, an unknown class id, a non-numeric or repeated `source_id`, a label map with
  gaps in its ids) is an error that lists the problems and points to `--copy`.
- `--copy`: new shards in tfod's layout. Problem boxes and images are skipped and reported, class
  ids are renumbered 1..N, source ids 1..M; each image's encoded bytes are copied unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from tfod import atomic
from tfod.console import track
from tfod.data.annotations import Box, Kind, Mask, Problem, SourceImage
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
from tfod.data.images import ImageError, PreparedImage, decode_image
from tfod.data.labelmap import read_label_map
from tfod.data.tfrecord import ShardWriter, build_example, shard_names
from tfod.errors import TfodError

FORMAT = "odapi-tfrecord"
REQUIRED_KEYS = ("image/encoded", "image/height", "image/width")
BOX_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))
MASK_KEY = "image/object/mask"
# Each key's value type, as Model Garden's TfExampleDecoder parses it.
KINDS = {
    "image/encoded": "bytes_list",
    "image/source_id": "bytes_list",
    "image/filename": "bytes_list",
    "image/height": "int64_list",
    "image/width": "int64_list",
    **dict.fromkeys(BOX_KEYS, "float_list"),
    "image/object/class/label": "int64_list",
    "image/object/is_crowd": "int64_list",
    "image/object/difficult": "int64_list",
    MASK_KEY: "bytes_list",  # PNG strings, as the API's dataset tools write them
}
# What TensorFlow's decode_image (Model Garden's decoder) reads; Pillow reads more.
HARMLESS = {Kind.BOX_CLIPPED, Kind.SIZE_MISMATCH}  # what records may keep when referenced
TF_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "GIF": "gif", "BMP": "bmp"}


@dataclass
class _Example:
    """One checked Example: where it came from, what it holds and whether it must be rewritten."""

    record: bytes
    where: str  # "file.record#12"
    source_id: str
    filename: str
    image: PreparedImage | None
    boxes: list[CheckedBox] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def expand(patterns: Sequence[str], what: str) -> list[Path]:
    """The record files named by `patterns` (paths, globs or comma-separated lists), in order.

    Raises:
        TfodError: a pattern matches no file.
    """
    files: list[Path] = []
    for pattern in (p.strip() for entry in patterns for p in entry.split(",")):
        if not pattern:
            continue
        matches = sorted(glob.glob(str(Path(pattern).expanduser())))  # noqa: PTH207 (absolute globs)
        if not matches:
            raise TfodError(f"no {what} record file matches {pattern!r}")
        files.extend(Path(m) for m in matches if Path(m) not in files)
    if not files:
        raise TfodError(f"no {what} records given")
    return files


def import_records(
    train: Sequence[Path],
    val: Sequence[Path],
    label_map: Path,
    out: Path,
    copy: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Make the dataset folder `out` from Object Detection API records and their label map.

    Returns:
        The content of `dataset.json`.

    Raises:
        TfodError: unreadable label map or records, an output folder tfod did not write, nothing
            usable, or (by reference) records that need a rewrite.
    """
    files = {"train": list(train), "val": list(val)}
    for path in [*files["train"], *files["val"], label_map]:
        check_out(out, path)
        if path != label_map and not path.is_file():
            raise TfodError("a record file must be a regular file", path)
    labels = read_label_map(label_map)
    classes = list(labels.values())
    new_ids = {name: i for i, name in enumerate(classes, start=1)}
    by_old_id = {old: name for old, name in labels.items()}
    problems: list[Problem] = []
    masks = _any_masks([*files["train"], *files["val"]])
    examples: dict[str, list[_Example]] = {
        split: list(
            track(
                _read(files[split], by_old_id, new_ids, problems, masks),
                _count(files[split]),
                f"Checking {split} records",
                progress,
            )
        )
        for split in SPLITS
    }
    _check_source_ids(examples, problems)
    gaps = list(labels) != list(range(1, len(labels) + 1))
    if not copy:
        _refuse_rewrites(problems, gaps, label_map)

    stats = {split: SplitStats() for split in SPLITS}
    coco = CocoBuilder(classes)
    fingerprint = hashlib.sha256()
    with atomic.atomic_directory(out) as tmp:
        shards = _write_shards(tmp, files, examples, copy, stats, coco, fingerprint)
        raise_if_empty(stats, problems, label_map, out)
        _refuse_an_empty_split(files, stats, problems, out)
        write_label_map_and_truth(tmp, classes, coco, fingerprint)
        how = "copied into tfod's layout (image bytes unchanged)" if copy else "referenced"
        summary = dataset_summary(
            {
                "path": str(label_map.resolve().parent),
                "format": FORMAT,
                "records": {s: [str(p.resolve()) for p in files[s]] for s in SPLITS},
                "mode": "copy" if copy else "reference",
            },
            classes,
            {name: old for old, name in labels.items()} if gaps else {},
            {"method": f"the records' own train/val split, {how}", "seed": None},
            stats,
            shards,
            problems,
            fingerprint,
            difficult="keep",
            changes=Counter(),
        )
        write_metadata(tmp, summary)
    return summary


def _write_shards(
    folder: Path,
    files: dict[str, list[Path]],
    examples: dict[str, list[_Example]],
    copy: bool,
    stats: dict[str, SplitStats],
    coco: CocoBuilder,
    fingerprint: Any,
) -> dict[str, list[str]]:
    """Each split's shards in `folder`, copied or linked to the records; the usable examples
    counted into `stats`, `coco` (validation) and `fingerprint`. Returns the shard names."""
    shards: dict[str, list[str]] = {}
    next_id = 0
    for split in SPLITS:
        kept = [e for e in examples[split] if e.image is not None]
        if copy:
            shards[split], next_id = _copy_split(folder, split, len(files[split]), kept, next_id)
        else:
            shards[split] = shard_names(split, len(files[split]))
            for name, original in zip(shards[split], files[split], strict=True):
                (folder / name).symlink_to(original.resolve())
        for example in kept:
            count_record(fingerprint, example.record)
            stats[split].add(_image(example), example.boxes)
            if split == "val":
                coco.add(int(example.source_id), example.filename, _image(example), example.boxes)
    return shards


def _copy_split(
    folder: Path, split: str, shards: int, kept: list[_Example], last_id: int
) -> tuple[list[str], int]:
    """Write `kept` as tfod's records, numbering them on from `last_id`; (shard names, last id)."""
    writer = ShardWriter(folder, split, shards)
    try:
        for example in kept:
            last_id += 1
            example.source_id = str(last_id)
            example.record = build_example(
                last_id, example.filename, _image(example), example.boxes
            )
            writer.write(example.record)
    finally:
        writer.close()
    return [p.name for p in writer.paths], last_id


def _refuse_an_empty_split(
    files: dict[str, list[Path]],
    stats: dict[str, SplitStats],
    problems: list[Problem],
    out: Path,
) -> None:
    for split in SPLITS:
        if files[split] and not stats[split].images:
            raise TfodError(
                f"no usable image in the {split} records "
                f"({', '.join(p.name for p in files[split])}); {out} was left as it was. "
                f"Problems found: {_first_problems(problems)}"
            )


def _first_problems(problems: list[Problem]) -> str:
    shown = "; ".join(f"{p.file}: {p.detail}" for p in problems[:3])
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "") or "none"


def _image(example: _Example) -> PreparedImage:
    assert example.image is not None
    return example.image


def _count(files: Sequence[Path]) -> int:
    import tensorflow as tf

    total = 0
    for path in files:
        with contextlib.suppress(tf.errors.OpError):  # _read reports where it breaks
            total += sum(1 for _ in tf.data.TFRecordDataset(str(path)))
    return total


def _read(
    files: Sequence[Path],
    by_old_id: dict[int, str],
    new_ids: dict[str, int],
    problems: list[Problem],
    masks: bool,
) -> Iterator[_Example]:
    import tensorflow as tf

    for path in files:
        index = -1
        try:
            for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                where = f"{path.name}#{index}"
                example = _check(bytes(record), where, by_old_id, new_ids, masks)
                problems.extend(example.problems)
                yield example
        except tf.errors.OpError as err:
            problems.append(
                Problem(
                    Kind.UNREADABLE_IMAGE,
                    path.name,
                    f"record {index + 1} and after cannot be read ({err.message.splitlines()[0]})",
                )
            )


def _any_masks(files: Sequence[Path]) -> bool:
    """Whether any Example in `files` has `image/object/mask` values: then the dataset has masks,
    and each box of an Example without them gets its rectangle (a counted `MISSING_MASK`)."""
    import tensorflow as tf

    needle = MASK_KEY.encode()
    for path in files:
        with contextlib.suppress(tf.errors.OpError):  # _read reports where it breaks
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                if needle not in record:  # a key is stored as its bytes: no parse needed
                    continue
                with contextlib.suppress(DecodeError):
                    example = tf.train.Example.FromString(bytes(record))
                    if _values(example.features.feature, MASK_KEY):
                        return True
    return False


def _check(
    record: bytes,
    where: str,
    by_old_id: dict[int, str],
    new_ids: dict[str, int],
    masks: bool,
) -> _Example:
    """Decode and check one serialized Example (with `masks`, its boxes' masks too)."""
    import tensorflow as tf

    try:
        feature = tf.train.Example.FromString(record).features.feature
    except DecodeError as err:
        return _bad(record, where, Kind.BAD_ANNOTATION, f"not a tf.train.Example ({err})")
    problem = _feature_problem(feature)
    if problem:
        return _bad(record, where, Kind.BAD_ANNOTATION, problem)
    source_id = _text(feature, "image/source_id")
    filename = _text(feature, "image/filename") or where
    example = _Example(record, where, source_id, filename, None)
    encoded = bytes(_values(feature, "image/encoded")[0])
    stored = (int(_values(feature, "image/width")[0]), int(_values(feature, "image/height")[0]))
    try:
        with decode_image(encoded) as picture:
            fmt, size = picture.format or "", picture.size
    except ImageError as err:
        return _bad(record, where, Kind.UNREADABLE_IMAGE, f"{filename}: {err}")
    if fmt not in TF_FORMATS:
        return _bad(
            record, where, Kind.UNREADABLE_IMAGE, f"{filename}: TensorFlow cannot decode {fmt}"
        )
    example.image = PreparedImage(encoded, TF_FORMATS[fmt], size[0], size[1], ())

    if not _check_boxes(example, feature, by_old_id, new_ids, masks):
        return example
    if stored != size:
        example.problems.append(
            Problem(
                Kind.SIZE_MISMATCH,
                where,
                f"{filename}: image/width,height say {stored[0]}x{stored[1]} but the image is "
                f"{size[0]}x{size[1]}",
            )
        )
    return example


def _feature_problem(feature: Any) -> str | None:
    """Features of the wrong type or missing, as one line (None: none)."""
    mistyped = [
        f"{key} holds {kind.removesuffix('_list')} values where {want.removesuffix('_list')} "
        "values belong"
        for key, want in KINDS.items()
        if key in feature and (kind := feature[key].WhichOneof("kind")) not in (want, None)
    ]
    if mistyped:
        return "; ".join(mistyped)
    missing = [k for k in REQUIRED_KEYS if not _values(feature, k)]
    return f"missing {', '.join(missing)}" if missing else None


def _check_boxes(
    example: _Example,
    feature: Any,
    by_old_id: dict[int, str],
    new_ids: dict[str, int],
    masks: bool,
) -> bool:
    """The Example's boxes (with `masks`, each with its mask), checked against its image
    (`example.image`), into `example`; False when they cannot be read (the problem recorded)."""
    assert example.image is not None
    size = (example.image.width, example.image.height)
    where, filename = example.where, example.filename
    coords = [list(_values(feature, k)) for k in BOX_KEYS]
    label_ids = list(_values(feature, "image/object/class/label"))
    n = len(coords[0])
    if any(len(c) != n for c in coords) or len(label_ids) != n:
        example.problems.append(
            Problem(
                Kind.BAD_ANNOTATION,
                where,
                f"{filename}: {n} boxes but {len(label_ids)} image/object/class/label values "
                "(Model Garden reads the class ids from there); its boxes are not used",
            )
        )
        return False
    pngs = [bytes(v) for v in _values(feature, MASK_KEY)]
    if pngs and len(pngs) != n:
        example.problems.append(
            Problem(
                Kind.BAD_ANNOTATION,
                where,
                f"{filename}: {n} boxes but {len(pngs)} {MASK_KEY} values; its boxes are not used",
            )
        )
        return False
    crowd = list(_values(feature, "image/object/is_crowd")) or [0] * n
    difficult = list(_values(feature, "image/object/difficult")) or [0] * n
    boxes = []
    for i in range(n):
        boxes.append(
            Box(
                by_old_id.get(int(label_ids[i]), f"id {label_ids[i]}"),
                coords[0][i],
                coords[1][i],
                coords[2][i],
                coords[3][i],
                f"box {i + 1}",
                is_crowd=bool(crowd[i]) if i < len(crowd) else False,
                difficult=bool(difficult[i]) if i < len(difficult) else False,
                mask=Mask(png=pngs[i]) if pngs else None,
            )
        )
    image = SourceImage(Path(filename), filename, where, boxes, normalized=True)
    example.boxes, box_problems = check_boxes(image, size[0], size[1], new_ids, masks=masks)
    example.problems.extend(box_problems)
    return True


def _bad(record: bytes, where: str, kind: Kind, detail: str) -> _Example:
    return _Example(record, where, "", where, None, problems=[Problem(kind, where, detail)])


def _values(feature: Any, key: str) -> Any:
    if key not in feature:
        return []
    value = feature[key]
    kind = value.WhichOneof("kind")
    return getattr(value, kind).value if kind else []


def _text(feature: Any, key: str) -> str:
    values = _values(feature, key)
    return bytes(values[0]).decode("utf-8", "replace") if len(values) else ""


def _check_source_ids(examples: dict[str, list[_Example]], problems: list[Problem]) -> None:
    """COCO evaluation needs a unique numeric `image/source_id` per validation image."""
    seen: dict[str, str] = {}
    for example in examples["val"]:
        if example.image is None:
            continue
        if not example.source_id.isdigit():
            problems.append(
                Problem(
                    Kind.BAD_SOURCE_ID,
                    example.where,
                    f"{example.filename}: image/source_id {example.source_id!r} is not a number "
                    "(Model Garden's evaluation parses it as one)",
                )
            )
        elif example.source_id in seen:
            problems.append(
                Problem(
                    Kind.BAD_SOURCE_ID,
                    example.where,
                    f"{example.filename}: image/source_id {example.source_id} is also used by "
                    f"{seen[example.source_id]}",
                )
            )
        else:
            seen[example.source_id] = example.where


def _refuse_rewrites(problems: list[Problem], gaps: bool, label_map: Path) -> None:
    """By reference, Model Garden reads the records as they are: nothing may need changing (a box
    a little outside the image is clipped by Model Garden too; a wrong stored size only changes
    Model Garden's own area field, which tfod's evaluation does not use)."""
    blocking = [p for p in problems if p.kind not in HARMLESS]
    reasons = [f"  {p.kind.value}: {p.file}: {p.detail}" for p in blocking[:10]]
    if len(blocking) > 10:
        reasons.append(f"  ... and {len(blocking) - 10} more")
    if gaps:
        reasons.insert(
            0, f"  the label map's ids are not 1..N ({label_map}): they must be renumbered"
        )
    if reasons:
        raise TfodError(
            "these records cannot be used as they are:\n"
            + "\n".join(reasons)
            + "\nRe-run with --copy: tfod writes new shards that skip or fix each of these (every "
            "one reported in dataset.json), with the images' bytes unchanged."
        )
