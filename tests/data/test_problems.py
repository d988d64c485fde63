"""Bad input is counted and reported, never dropped silently; --strict refuses; atomic writes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.data.sources import WRITERS, exif_jpeg_bytes, jpeg_bytes
from tfod.data import convert as convert_module
from tfod.data.annotations import Kind
from tfod.data.convert import ConvertOptions, convert
from tfod.data.tfrecord import read_examples
from tfod.errors import TfodError

QUIET = ConvertOptions(workers=1, progress=False)


def _bad_coco(root: Path) -> Path:
    """A COCO source with every kind of problem, plus valid images that must all survive."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    for index, name in enumerate(
        ["good1.jpg", "good2.jpg", "good3.jpg", "boxes.jpg", "resized.jpg"]
    ):
        (images_dir / name).write_bytes(jpeg_bytes(100, 80, index))
    (images_dir / "zcopy.jpg").write_bytes((images_dir / "good1.jpg").read_bytes())
    (images_dir / "garbage.jpg").write_bytes(b"this is not a jpeg")
    truncated = jpeg_bytes(100, 80, 99)
    (images_dir / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (root.parent / "outside.jpg").write_bytes(jpeg_bytes(100, 80, 42))
    (images_dir / "twin_a.jpg").write_bytes(jpeg_bytes(100, 80, 51))
    (images_dir / "twin_b.jpg").write_bytes(jpeg_bytes(100, 80, 52))
    # Stored 100x80, shown 80x100 (EXIF 6: turn 90° clockwise), annotated on the stored pixels.
    (images_dir / "sideways.jpg").write_bytes(exif_jpeg_bytes(100, 80, 6, 53))

    entries = [
        (1, "good1.jpg", 100, 80),
        (2, "good2.jpg", 100, 80),
        (3, "good3.jpg", 100, 80),
        (4, "boxes.jpg", 100, 80),
        (5, "resized.jpg", 200, 160),  # annotated at twice the real size
        (6, "zcopy.jpg", 100, 80),  # same bytes as good1.jpg
        (7, "garbage.jpg", 100, 80),
        (8, "truncated.jpg", 100, 80),
        (9, "ghost.jpg", 100, 80),  # no such file
        (10, "../../outside.jpg", 100, 80),  # escapes the source folder
        (11, "twin_a.jpg", 100, 80),  # two images share id 11: its box belongs to neither
        (11, "twin_b.jpg", 100, 80),
        (12, "sideways.jpg", 100, 80),  # the stored size: boxes are turned with the image
    ]
    images = [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in entries]
    anns = [
        (1, 1, [10, 10, 20, 20]),  # fine
        (2, 1, [10, 10, 20, 20]),
        (3, 2, [5, 5, 30, 30]),
        (4, 1, [90, 70, 20, 20]),  # partly outside: clipped
        (4, 1, [200, 200, 10, 10]),  # wholly outside: dropped
        (4, 2, [50, 50, -10, 10]),  # inverted
        (4, 2, [50, 50, 0, 10]),  # zero area
        (4, 99, [10, 10, 10, 10]),  # unknown category
        (5, 1, [20, 20, 40, 40]),  # -> rescaled to 10,10,20,20
        (6, 1, [1, 1, 5, 5]),
        (7, 1, [1, 1, 5, 5]),
        (9, 1, [1, 1, 5, 5]),
        (10, 1, [1, 1, 5, 5]),
        (11, 1, [1, 1, 5, 5]),
        (12, 1, [10, 20, 30, 40]),  # stored x 10..40, y 20..60 -> upright x 20..60, y 10..40
    ]
    annotations = [
        {"id": k, "image_id": i, "category_id": c, "bbox": b, "iscrowd": 0}
        for k, (i, c, b) in enumerate(anns, start=1)
    ]
    annotations.append({"id": 99, "image_id": 1, "category_id": 1})  # no bbox: bad annotation
    categories = [
        {"id": 1, "name": "cat"},
        {"id": 2, "name": "dog"},
        {"id": 3, "name": "bird\nof prey"},  # a newline would split labels.txt: cleaned
    ]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def test_every_problem_is_counted_and_no_valid_image_is_lost(tmp_path: Path) -> None:
    src = _bad_coco(tmp_path / "corpus" / "src")
    out = tmp_path / "out"
    summary = convert(src, out, QUIET)
    counts = summary["problems"]["counts"]
    assert counts == {
        "bad_annotation": 1,
        "bad_class_name": 1,
        "box_clipped": 1,
        "box_outside": 1,
        "duplicate_id": 1,
        "duplicate_image": 1,
        "exif_rotated": 1,
        "invalid_box": 2,
        "missing_image": 1,
        "path_escapes_source": 1,
        "size_mismatch": 1,
        "unknown_class": 1,
        "unreadable_image": 2,
    }
    # Records imported from the Object Detection API have one more kind (tests/odapi); a source
    # with masks has the mask kinds (tests/data/test_masks.py).
    masks = {k.value for k in Kind if "mask" in k.value}
    converter_kinds = {k.value for k in Kind} - {Kind.BAD_SOURCE_ID.value} - masks
    assert set(counts) == converter_kinds, "the corpus must cover every kind of problem"
    assert Counter(p["kind"] for p in summary["problems"]["items"]) == counts
    for item in summary["problems"]["items"]:
        if item["kind"] != "bad_class_name":  # a property of the class list, not of one file
            assert item["file"] == "annotations.json" and item["detail"]
    assert [c["name"] for c in summary["classes"]] == ["cat", "dog", "bird of prey"]

    records = {Path(r.filename).name: r for r in read_examples(sorted(out.glob("*.tfrecord")))}
    assert set(records) == {
        "good1.jpg", "good2.jpg", "good3.jpg", "boxes.jpg", "resized.jpg", "sideways.jpg"
    }  # fmt: skip
    assert records["good1.jpg"].labels == [1]
    np.testing.assert_allclose(records["boxes.jpg"].boxes, [(0.9, 0.875, 1.0, 1.0)], atol=1e-6)
    np.testing.assert_allclose(records["resized.jpg"].boxes, [(0.1, 0.125, 0.3, 0.375)], atol=1e-6)
    sideways = records["sideways.jpg"]
    assert (sideways.width, sideways.height) == (80, 100)
    np.testing.assert_allclose(sideways.boxes, [(20 / 80, 10 / 100, 60 / 80, 40 / 100)], atol=1e-6)


def test_strict_refuses_and_writes_nothing(tmp_path: Path) -> None:
    src = _bad_coco(tmp_path / "corpus" / "src")
    out = tmp_path / "out"
    with pytest.raises(TfodError, match="--strict: 15 problem") as info:
        convert(src, out, ConvertOptions(workers=1, progress=False, strict=True))
    assert "path_escapes_source" in str(info.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_strict_passes_clean_data(tmp_path: Path) -> None:
    src = WRITERS["coco"](tmp_path / "src")
    summary = convert(src, tmp_path / "out", ConvertOptions(workers=1, progress=False, strict=True))
    assert summary["problems"]["counts"] == {}


def test_problems_found_while_decoding_also_fail_strict(tmp_path: Path) -> None:
    src = WRITERS["csv"](tmp_path / "src")
    (src / "images" / "a.jpg").write_bytes(b"broken")
    with pytest.raises(TfodError, match="unreadable_image 1"):
        convert(src, tmp_path / "out", ConvertOptions(workers=1, progress=False, strict=True))
    assert not (tmp_path / "out").exists()


def test_a_convert_that_dies_midway_leaves_the_old_dataset_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = WRITERS["csv"](tmp_path / "src")
    out = tmp_path / "out"
    first = convert(src, out, QUIET)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real = convert_module.build_example
    calls = {"n": 0}

    def dies_on_third(*args: object, **kwargs: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C halfway
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(convert_module, "build_example", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        convert(src, out, ConvertOptions(workers=1, progress=False, seed=5))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"], "no temporary left behind"
    assert json.loads((out / "dataset.json").read_text())["fingerprint"] == first["fingerprint"]


@pytest.mark.parametrize(
    ("fmt", "break_it", "kind"),
    [
        (
            "voc",
            lambda s: (s / "Annotations" / "a.xml").write_text("<annotation><filename>"),
            "bad_annotation",
        ),
        (
            "yolo",
            lambda s: (s / "labels" / "a.txt").write_text("0 0.5 0.5 0.2\n"),
            "bad_annotation",
        ),
        (
            "yolo",
            lambda s: (s / "labels" / "a.txt").write_text("7 0.5 0.5 0.2 0.2\n"),
            "unknown_class",
        ),
        (
            "yolo",
            lambda s: (s / "labels" / "zz.txt").write_text("0 0.5 0.5 0.2 0.2\n"),
            "missing_image",
        ),
        (
            "csv",
            lambda s: (s / "labels.csv").open("a").write("a.jpg,64,48,cat,x,1,2,3\n"),
            "bad_annotation",
        ),
    ],
    ids=["voc-xml", "yolo-fields", "yolo-class", "yolo-orphan-label", "csv-number"],
)
def test_each_reader_reports_its_own_broken_entries(
    tmp_path: Path, fmt: str, break_it: object, kind: str
) -> None:
    src = WRITERS[fmt](tmp_path / "src")
    break_it(src)  # type: ignore[operator]
    summary = convert(src, tmp_path / "out", QUIET)
    assert summary["problems"]["counts"].get(kind) == 1, summary["problems"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "cannot tell the annotation format"),
        (lambda p: (p.mkdir(), (p / "x.json").write_text("{"), p)[2], "cannot read COCO JSON"),
        (lambda p: (p.mkdir(), (p / "x.csv").write_text("a,b\n1,2\n"), p)[2], "missing column"),
        (
            lambda p: (
                p.mkdir(),
                (p / "a.jpg").write_bytes(b"x"),
                (p / "data.yaml").write_text("k: 1"),
                p,
            )[3],
            "no class names",
        ),
    ],
    ids=["missing", "empty", "bad-json", "csv-header", "yolo-no-names"],
)
def test_unusable_sources_are_one_clear_error(tmp_path: Path, make: object, message: str) -> None:
    src = make(tmp_path / "src")  # type: ignore[operator]
    with pytest.raises(TfodError, match=message):
        convert(src, tmp_path / "out", QUIET)
