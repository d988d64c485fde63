"""Conversion: every format gives the same records; Model Garden reads them back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.sources import CLASSES, COCO_IDS, SCENE, WRITERS
from tfod.data.convert import ConvertOptions, convert
from tfod.data.labelmap import read_label_map
from tfod.data.tfrecord import read_examples

QUIET = ConvertOptions(workers=1, progress=False)


def _records(out: Path) -> list:
    summary = json.loads((out / "dataset.json").read_text())
    shards = [out / n for split in ("train", "val") for n in summary["splits"][split]["shards"]]
    return sorted(read_examples(shards), key=lambda e: e.source_id)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The SCENE written in each format and converted (the COCO one with two worker processes)."""
    outs = {}
    for fmt, write in WRITERS.items():
        base = tmp_path_factory.mktemp(fmt)
        workers = 2 if fmt == "coco" else 1
        convert(write(base / "src"), base / "out", ConvertOptions(workers=workers, progress=False))
        outs[fmt] = base / "out"
    return outs


def test_every_format_gives_the_same_records(converted: dict[str, Path]) -> None:
    reference = _records(converted["voc"])
    assert len(reference) == len(SCENE)
    for fmt in ("coco", "yolo", "csv"):
        records = _records(converted[fmt])
        assert len(records) == len(reference), fmt
        for ours, ref in zip(records, reference, strict=True):
            assert ours.source_id == ref.source_id
            assert Path(ours.filename).name == Path(ref.filename).name
            assert ours.encoded == ref.encoded, f"{fmt}: image bytes differ"
            assert (ours.width, ours.height, ours.format) == (ref.width, ref.height, ref.format)
            assert ours.labels == ref.labels and ours.texts == ref.texts
            assert ours.is_crowd == ref.is_crowd
            np.testing.assert_allclose(ours.boxes, ref.boxes, atol=1e-6, err_msg=fmt)
            assert ours.area == pytest.approx(ref.area, rel=1e-5), fmt
    fingerprints = {
        fmt: json.loads((out / "dataset.json").read_text())["fingerprint"]
        for fmt, out in converted.items()
    }
    # Filenames differ between layouts (JPEGImages/ vs images/), so fingerprints may too; but the
    # two layouts with identical paths and integer boxes must agree exactly.
    assert fingerprints["coco"] == fingerprints["csv"]


def test_label_map_coco_json_and_records_share_class_ids(converted: dict[str, Path]) -> None:
    for fmt, out in converted.items():
        assert read_label_map(out / "label_map.pbtxt") == {1: "cat", 2: "dog"}, fmt
        coco = json.loads((out / "val_coco.json").read_text())
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "cat"), (2, "dog")]
        by_id = {r.source_id: r for r in _records(out)}
        for ann in coco["annotations"]:
            record = by_id[ann["image_id"]]
            assert ann["category_id"] in record.labels
    summary = json.loads((converted["coco"] / "dataset.json").read_text())
    assert [(c["name"], c["original_id"]) for c in summary["classes"]] == list(COCO_IDS.items())


def test_model_garden_decoder_returns_the_original_boxes(converted: dict[str, Path]) -> None:
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    out = converted["yolo"]
    summary = json.loads((out / "dataset.json").read_text())
    shards = [str(out / n) for s in ("train", "val") for n in summary["splits"][s]["shards"]]
    decoder = tf_example_decoder.TfExampleDecoder()
    by_name = {p.name: p for p in SCENE}
    seen = 0
    for serialized in tf.data.TFRecordDataset(shards):
        decoded = decoder.decode(serialized)
        source_id = int(decoded["source_id"].numpy())
        record = next(r for r in _records(out) if r.source_id == source_id)
        pic = by_name[Path(record.filename).name]
        assert decoded["image"].shape == (pic.height, pic.width, 3)
        expected = [
            [o.y0 / pic.height, o.x0 / pic.width, o.y1 / pic.height, o.x1 / pic.width]
            for o in pic.objects
        ]
        got = decoded["groundtruth_boxes"].numpy().tolist()
        np.testing.assert_allclose(
            np.reshape(got, (-1, 4)), np.reshape(expected, (-1, 4)), atol=1e-6
        )
        labels = [CLASSES.index(o.label) + 1 for o in pic.objects]
        assert decoded["groundtruth_classes"].numpy().tolist() == labels
        seen += 1
    assert seen == len(SCENE)


def test_val_coco_json_loads_in_pycocotools(converted: dict[str, Path]) -> None:
    from pycocotools.coco import COCO

    out = converted["csv"]
    coco = COCO(str(out / "val_coco.json"))
    val_ids = {r.source_id for r in read_examples(sorted(out.glob("val-*.tfrecord")))}
    assert set(coco.getImgIds()) == val_ids
    for image_id in coco.getImgIds():
        record = next(r for r in _records(out) if r.source_id == image_id)
        boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        expected = [
            [
                x0 * record.width,
                y0 * record.height,
                (x1 - x0) * record.width,
                (y1 - y0) * record.height,
            ]
            for x0, y0, x1, y1 in record.boxes
        ]
        np.testing.assert_allclose(
            np.reshape(boxes, (-1, 4)), np.reshape(expected, (-1, 4)), atol=1e-3
        )


def test_summary_counts(converted: dict[str, Path]) -> None:
    summary = json.loads((converted["voc"] / "dataset.json").read_text())
    splits = summary["splits"]
    assert splits["train"]["images"] + splits["val"]["images"] == len(SCENE)
    assert splits["val"]["images"] == 1  # round(6 * 0.2)
    total_boxes = sum(len(p.objects) for p in SCENE)
    assert splits["train"]["boxes"] + splits["val"]["boxes"] == total_boxes
    per_class = {
        c: splits["train"]["per_class"][c] + splits["val"]["per_class"][c] for c in CLASSES
    }
    assert per_class == {"cat": 4, "dog": 3}
    assert splits["train"]["images_without_boxes"] + splits["val"]["images_without_boxes"] == 1
    sizes = {
        k: splits["train"]["box_sizes"][k] + splits["val"]["box_sizes"][k]
        for k in ("small", "medium", "large")
    }
    assert sizes == {"small": 5, "medium": 2, "large": 0}
    assert summary["problems"]["counts"] == {}


def test_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    src = WRITERS["csv"](tmp_path / "src")

    def val_names(out: Path, seed: int, fraction: float) -> set[str]:
        convert(
            src, out, ConvertOptions(workers=1, progress=False, seed=seed, val_fraction=fraction)
        )
        return {Path(r.filename).name for r in read_examples(sorted(out.glob("val-*.tfrecord")))}

    first = val_names(tmp_path / "a", 0, 0.5)
    assert first == val_names(tmp_path / "b", 0, 0.5)
    assert len(first) == 3
    others = [val_names(tmp_path / f"s{seed}", seed, 0.5) for seed in (1, 2, 3)]
    assert any(o != first for o in others)


def test_source_split_is_kept_unless_a_fraction_is_given(tmp_path: Path) -> None:
    src = WRITERS["voc"](tmp_path / "src")
    (src / "ImageSets" / "Main").mkdir(parents=True)
    (src / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\nd\n")
    (src / "ImageSets" / "Main" / "val.txt").write_text("e\nf\n")
    summary = convert(src, tmp_path / "out", QUIET)
    assert "source's own" in summary["split"]["method"]
    val = {Path(r.filename).stem for r in read_examples(sorted((tmp_path / "out").glob("val-*")))}
    assert val == {"e", "f"}
    summary = convert(
        src, tmp_path / "out", ConvertOptions(workers=1, progress=False, val_fraction=0.5)
    )
    assert summary["splits"]["val"]["images"] == 3


def test_reconverting_replaces_a_dataset_but_never_a_foreign_folder(tmp_path: Path) -> None:
    from tfod.errors import TfodError

    src = WRITERS["csv"](tmp_path / "src")
    out = tmp_path / "out"
    convert(src, out, QUIET)
    (out / "train-00007-of-00009.tfrecord").write_text("an old shard of tfod's")
    convert(src, out, QUIET)
    assert not (out / "train-00007-of-00009.tfrecord").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TfodError, match="not empty"):
        convert(src, foreign, QUIET)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_classes_option_orders_and_filters(tmp_path: Path) -> None:
    src = WRITERS["csv"](tmp_path / "src")
    summary = convert(
        src, tmp_path / "out", ConvertOptions(workers=1, progress=False, classes=("dog",))
    )
    assert [c["name"] for c in summary["classes"]] == ["dog"]
    assert summary["problems"]["counts"] == {"unknown_class": 4}
    assert read_label_map(tmp_path / "out" / "label_map.pbtxt") == {1: "dog"}
