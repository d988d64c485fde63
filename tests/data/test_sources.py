"""What sources say beyond boxes: their own train/val split, and VOC's difficult objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.data.sources import SCENE, write_coco, write_csv, write_voc, write_yolo
from tfod.data.annotations import split_from_name
from tfod.data.convert import ConvertOptions, convert
from tfod.data.tfrecord import read_examples

QUIET = ConvertOptions(workers=1, progress=False)
VAL = {"e.jpg", "f.jpg"}


def _val_names(out: Path) -> set[str]:
    return {Path(r.filename).name for r in read_examples(sorted(out.glob("val-*.tfrecord")))}


@pytest.mark.parametrize(
    ("name", "split"),
    [("instances_train2017", "train"), ("instances_val2017", "val"), ("train_labels", "train"),
     ("test_labels", "val"), ("valid", "val"), ("annotations", None), ("trainval", None)],
)  # fmt: skip
def test_split_from_name(name: str, split: str | None) -> None:
    assert split_from_name(name) == split


def test_yolo_ultralytics_layout_keeps_its_split(tmp_path: Path) -> None:
    src = write_yolo(tmp_path / "src")
    for split in ("train", "val"):
        (src / "images" / split).mkdir()
        (src / "labels" / split).mkdir()
    for pic in SCENE:
        split = "val" if pic.name in VAL else "train"
        stem = Path(pic.name).stem
        shutil.move(src / "images" / pic.name, src / "images" / split / pic.name)
        shutil.move(src / "labels" / f"{stem}.txt", src / "labels" / split / f"{stem}.txt")
    summary = convert(src, tmp_path / "out", QUIET)
    assert "source's own" in summary["split"]["method"]
    assert _val_names(tmp_path / "out") == VAL
    assert sum(s["boxes"] for s in summary["splits"].values()) == sum(len(p.objects) for p in SCENE)


def test_csv_train_and_test_files_keep_their_split(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "src")
    rows = (src / "labels.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    (src / "labels.csv").unlink()
    (src / "train_labels.csv").write_text(
        "\n".join([header, *(r for r in body if r.split(",")[0] not in VAL)])
    )
    (src / "test_labels.csv").write_text(
        "\n".join([header, *(r for r in body if r.split(",")[0] in VAL)])
    )
    convert(src, tmp_path / "out", QUIET)
    assert _val_names(tmp_path / "out") == VAL


def test_coco_train_and_val_files_keep_their_split(tmp_path: Path) -> None:
    src = write_coco(tmp_path / "src")
    doc = json.loads((src / "annotations.json").read_text())
    (src / "annotations.json").unlink()
    (src / "annotations").mkdir()
    for split in ("train", "val"):
        images = [i for i in doc["images"] if (i["file_name"] in VAL) == (split == "val")]
        ids = {i["id"] for i in images}
        anns = [a for a in doc["annotations"] if a["image_id"] in ids]
        part = {"images": images, "annotations": anns, "categories": doc["categories"]}
        (src / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(part))
    convert(src, tmp_path / "out", QUIET)
    assert _val_names(tmp_path / "out") == VAL


@pytest.mark.parametrize(
    ("policy", "boxes", "crowd"), [("ignore", 2, [0, 1]), ("keep", 2, [0, 0]), ("drop", 1, [0])]
)
def test_voc_difficult_objects(tmp_path: Path, policy: str, boxes: int, crowd: list[int]) -> None:
    src = write_voc(tmp_path / "src")
    xml = src / "Annotations" / "a.xml"  # a.jpg has a cat, then a dog: mark the dog difficult
    text = xml.read_text()
    head, dog = text.rsplit("<difficult>0</difficult>", 1)
    xml.write_text(head + "<difficult>1</difficult>" + dog)
    options = ConvertOptions(workers=1, progress=False, difficult=policy, val_fraction=0.0)
    summary = convert(src, tmp_path / "out", options)
    (record,) = [
        r
        for r in read_examples(sorted((tmp_path / "out").glob("train-*")))
        if r.filename.endswith("a.jpg")
    ]
    assert len(record.boxes) == boxes and record.is_crowd == crowd
    assert summary["difficult"] == policy
    assert summary["splits"]["train"]["crowd_boxes"] == sum(crowd)
