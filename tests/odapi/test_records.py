"""`tfod data import-tfrecord`: the API's records become the same dataset tfod's converter makes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from tests.odapi.api_records import api_example, label_map_text, read_coco, write_api_dataset
from tfod.cli import app
from tfod.data.convert import ConvertOptions, convert
from tfod.data.demo import write_scenes
from tfod.data.tfrecord import read_examples
from tfod.errors import TfodError
from tfod.odapi.records import expand, import_records

COUNTS = ("images", "boxes", "images_without_boxes", "crowd_boxes", "per_class", "box_sizes")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """20 generated scenes, converted by tfod, and the same data as API-style records."""
    return _both_ways(tmp_path_factory.mktemp("scenes"), 20, seed=3)


def _both_ways(root: Path, n: int, seed: int, masks: bool = False) -> dict[str, Any]:
    """`n` generated scenes converted by tfod, and the same as API-style records (same split)."""
    source = root / "source"
    write_scenes(source, n, np.random.default_rng(seed), masks=masks)
    converted = root / "tfod"
    convert(source, converted, ConvertOptions(format="coco", progress=False, workers=1))
    val_files = {
        i["file_name"] for i in json.loads((converted / "val_coco.json").read_text())["images"]
    }
    train, val, label_map = write_api_dataset(source, root / "api", val_files)
    return {"source": source, "tfod": converted, "train": train, "val": val, "label_map": label_map}


@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """12 generated scenes with masks, converted by tfod, and the same as API-style records with
    image/object/mask PNGs."""
    return _both_ways(tmp_path_factory.mktemp("masked"), 12, seed=5, masks=True)


def _masks(folder: Path) -> dict[tuple[str, float], np.ndarray]:
    """val_coco.json's masks, keyed by file name and box x."""
    from pycocotools import mask as coco_mask

    coco = json.loads((folder / "val_coco.json").read_text())
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    return {
        (files[a["image_id"]], round(a["bbox"][0], 3)): coco_mask.decode(a["segmentation"])
        for a in coco["annotations"]
        if "segmentation" in a
    }


def _ground_truth(folder: Path) -> tuple[set[Any], set[Any]]:
    """val_coco.json keyed by file name (tfod numbers images 1..N; the API keeps COCO's ids)."""
    coco = json.loads((folder / "val_coco.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    images = {(i["file_name"], i["width"], i["height"]) for i in coco["images"]}
    boxes = {
        (files[a["image_id"]], names[a["category_id"]], *np.round(a["bbox"], 3), a["iscrowd"])
        for a in coco["annotations"]
    }
    return images, boxes


@pytest.mark.parametrize("copy", [False, True], ids=["reference", "copy"])
@pytest.mark.parametrize("data", ["scenes", "masked"])
def test_round_trip_matches_tfod_convert(
    data: str, tmp_path: Path, copy: bool, request: pytest.FixtureRequest
) -> None:
    """Boxes, and (`masked`: image/object/mask PNGs) masks as tfod's converter reads them."""
    scenes = request.getfixturevalue(data)
    out = tmp_path / "imported"
    summary = import_records(
        scenes["train"], scenes["val"], scenes["label_map"], out, copy=copy, progress=False
    )
    made = json.loads((scenes["tfod"] / "dataset.json").read_text())
    for split in ("train", "val"):
        for key in (*COUNTS, "masks"):
            assert summary["splits"][split][key] == made["splits"][split][key], (split, key)
        assert (summary["splits"][split]["masks"] > 0) == (data == "masked")
    assert [c["name"] for c in summary["classes"]] == [c["name"] for c in made["classes"]]
    assert _ground_truth(out) == _ground_truth(scenes["tfod"])
    ours, theirs = _masks(out), _masks(scenes["tfod"])
    assert ours.keys() == theirs.keys()
    for key, pixels in ours.items():
        assert np.array_equal(pixels, theirs[key]), key
    assert summary["problems"]["counts"] == {}
    assert json.loads((out / "dataset.json").read_text()) == summary

    shards = [out / name for s in ("train", "val") for name in summary["splits"][s]["shards"]]
    assert all(p.is_symlink() != copy for p in shards)
    found = list(read_examples(shards))
    assert all(len(e.masks) == (len(e.boxes) if data == "masked" else 0) for e in found)
    originals = {(scenes["source"] / e.filename).read_bytes() for e in found}
    images = {p.read_bytes() for p in (scenes["source"] / "images").iterdir()}
    assert originals == images  # every image, its bytes unchanged


def _write(path: Path, records: list[bytes]) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.fixture()
def faulty(scenes: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Records with one of each problem: file-name source ids (as the API's Pascal VOC converter
    writes them), an unknown class id, an inverted box, an undecodable image, a corrupt record."""
    source = scenes["source"]
    names, images, boxes = read_coco(source)

    train = [api_example(source, image, boxes(image), names) for image in images[:12]]
    unknown = dict(boxes(images[12])[0], category_id=7)
    names[7] = "dragon"
    train.append(api_example(source, images[12], [unknown], names))
    inverted = dict(boxes(images[13])[0], bbox=[40, 40, -20, 10])
    train.append(api_example(source, images[13], [inverted], names))
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / images[14]["file_name"]).write_bytes(b"\xff\xd8not a jpeg")
    train.append(api_example(broken, images[14], boxes(images[14]), names))
    val = [
        api_example(source, image, boxes(image), names, source_id=image["file_name"])
        for image in images[15:]
    ]
    records = tmp_path / "records"
    records.mkdir()
    corrupt = _write(records / "train-b.record", train[:2])
    corrupt.write_bytes(corrupt.read_bytes()[:-7])  # the last record is cut short
    return {
        "train": [_write(records / "train-a.record", train), corrupt],
        "val": [_write(records / "val.record", val)],
        "label_map": scenes["label_map"],
    }


def test_records_needing_changes_are_refused_by_reference(
    faulty: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(TfodError) as err:
        import_records(faulty["train"], faulty["val"], faulty["label_map"], out, progress=False)
    message = str(err.value)
    for expected in ("unknown_class", "invalid_box", "unreadable_image", "bad_source_id", "--copy"):
        assert expected in message
    assert "train-b.record" in message  # the corrupt file is named
    assert not out.exists()


def test_copy_skips_and_reports_every_problem(faulty: dict[str, Any], tmp_path: Path) -> None:
    summary = import_records(
        faulty["train"],
        faulty["val"],
        faulty["label_map"],
        tmp_path / "out",
        copy=True,
        progress=False,
    )
    counts = summary["problems"]["counts"]
    assert counts == {
        "bad_source_id": 5,
        "invalid_box": 1,
        "unknown_class": 1,
        "unreadable_image": 2,  # the undecodable image and the cut-short record
    }
    # 15 train records + 1 readable in the corrupt file, less the undecodable image.
    assert summary["splits"]["train"]["images"] == 15
    assert summary["splits"]["val"]["images"] == 5
    val = json.loads((tmp_path / "out" / "val_coco.json").read_text())
    assert sorted(i["id"] for i in val["images"]) == [16, 17, 18, 19, 20]  # renumbered


def test_label_map_with_gaps_is_renumbered_by_copy(scenes: dict[str, Any], tmp_path: Path) -> None:
    coco = json.loads((scenes["source"] / "annotations.json").read_text())
    gapped = [dict(c, id=c["id"] * 10) for c in coco["categories"]]
    label_map = tmp_path / "label_map.pbtxt"
    label_map.write_text(label_map_text(gapped))
    names = {c["id"]: c["name"] for c in gapped}
    records = []
    for image in coco["images"]:
        boxes = [
            dict(a, category_id=a["category_id"] * 10)
            for a in coco["annotations"]
            if a["image_id"] == image["id"]
        ]
        records.append(api_example(scenes["source"], image, boxes, names))
    train = _write(tmp_path / "train.record", records[:15])
    val = _write(tmp_path / "val.record", records[15:])
    with pytest.raises(TfodError, match=r"ids are not 1\.\.N"):
        import_records([train], [val], label_map, tmp_path / "ref", progress=False)
    summary = import_records(
        [train], [val], label_map, tmp_path / "copy", copy=True, progress=False
    )
    assert [(c["id"], c["original_id"]) for c in summary["classes"]] == [(1, 10), (2, 20), (3, 30)]
    labels = {
        label
        for e in read_examples(sorted((tmp_path / "copy").glob("*.tfrecord")))
        for label in e.labels
    }
    assert labels <= {1, 2, 3}


def test_cli_names_a_glob_that_matches_nothing(tmp_path: Path) -> None:
    with pytest.raises(TfodError, match="no train record file matches"):
        expand([str(tmp_path / "*.record")], "train")
    result = CliRunner().invoke(
        app,
        [
            "data",
            "import-tfrecord",
            "--train",
            str(tmp_path / "x-*.record"),
            "--val",
            str(tmp_path / "v.record"),
            "--label-map",
            str(tmp_path / "l.pbtxt"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, TfodError)


def test_mask_problems_are_counted_and_the_box_kept(masked: dict[str, Any], tmp_path: Path) -> None:
    """A mask that is no image, an Example without masks in a dataset with masks, and masks that
    do not match the boxes one to one: each counted; --copy keeps the boxes, rectangles as masks."""
    source = masked["source"]
    names, images, boxes = read_coco(source)

    def example(image: dict[str, Any], edit: Any) -> bytes:
        parsed = tf.train.Example.FromString(api_example(source, image, boxes(image), names))
        edit(parsed.features.feature)
        return bytes(parsed.SerializeToString())

    def not_an_image(feature: Any) -> None:
        feature["image/object/mask"].bytes_list.value[0] = b"not a png"

    def without_masks(feature: Any) -> None:
        del feature["image/object/mask"]

    def one_mask_short(feature: Any) -> None:
        del feature["image/object/mask"].bytes_list.value[-1]

    train = [example(images[0], not_an_image), example(images[1], without_masks)]
    train += [example(images[2], one_mask_short)]
    train += [api_example(source, image, boxes(image), names) for image in images[3:9]]
    val = [api_example(source, image, boxes(image), names) for image in images[9:]]
    records = tmp_path / "records"
    records.mkdir()
    files = (_write(records / "train.record", train), _write(records / "val.record", val))
    with pytest.raises(TfodError, match="--copy"):
        import_records(
            [files[0]], [files[1]], masked["label_map"], tmp_path / "ref", progress=False
        )
    summary = import_records(
        [files[0]], [files[1]], masked["label_map"], tmp_path / "out", copy=True, progress=False
    )
    counts = summary["problems"]["counts"]
    assert counts["invalid_mask"] == 1
    assert counts["missing_mask"] == len(boxes(images[1]))
    assert counts["bad_annotation"] == 1  # the image whose masks and boxes do not pair up
    shards = [tmp_path / "out" / n for n in summary["splits"]["train"]["shards"]]
    found = list(read_examples(shards))
    assert len(found) == 9 and all(len(e.masks) == len(e.boxes) for e in found)  # all images
