"""Masks in the data path: COCO polygons and RLE and YOLO-seg polygons become the PNG masks Model
Garden's Mask R-CNN decoder reads, placed, checked and reported as boxes are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from tests.data.sources import SCENE, exif_jpeg_bytes, jpeg_bytes, write_voc
from tfod.data.annotations import Kind
from tfod.data.convert import ConvertOptions, convert
from tfod.data.dataset import VAL_COCO_JSON
from tfod.data.demo import make_demo
from tfod.data.masks import decode_png
from tfod.data.tfrecord import DecodedExample, read_examples

QUIET = ConvertOptions(progress=False, workers=1, val_fraction=0.5, seed=0)
W, H = 64, 48
TRIANGLE = [8.0, 8.0, 40.0, 8.0, 8.0, 40.0]  # right angle at (8, 8)


def _rle(pixels: np.ndarray, compressed: bool) -> dict[str, Any]:
    """COCO's RLE of `pixels`: compressed counts (a string) or uncompressed (a list)."""
    if compressed:
        rle = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
    flat = pixels.T.reshape(-1)  # column-major, as COCO counts
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(pixels.shape), "counts": counts}


def _coco(root: Path, annotations: list[dict[str, Any]], pictures: int = 2, **image: Any) -> Path:
    """A COCO source: `pictures` W x H images, each given every one of `annotations`."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for image_id in range(1, pictures + 1):
        name = f"{image_id}.jpg"
        make = image.get("data", lambda seed: jpeg_bytes(W, H, seed))
        (root / "images" / name).write_bytes(make(image_id))
        size = image.get("size", (W, H))
        images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for ann in annotations:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "iscrowd": 0, **ann})  # fmt: skip
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def _examples(out: Path) -> list[DecodedExample]:
    return list(read_examples(sorted(out.glob("*.tfrecord"))))


def _pixels(example: DecodedExample) -> list[np.ndarray]:
    return [decode_png(png) for png in example.masks]


def _triangle_pixels() -> np.ndarray:
    return np.asarray(coco_mask.decode(coco_mask.frPyObjects([TRIANGLE], H, W))[..., 0])


def test_coco_polygons_and_rles_become_one_png_mask_per_box(tmp_path: Path) -> None:
    triangle = _triangle_pixels()
    square = np.zeros((H, W), np.uint8)
    square[20:40, 44:60] = 1
    annotations = [
        {"bbox": [8, 8, 32, 32], "segmentation": [TRIANGLE]},
        {"bbox": [44, 20, 16, 20], "segmentation": _rle(square, compressed=True)},
        {"bbox": [44, 20, 16, 20], "segmentation": _rle(square, compressed=False)},
    ]
    out = tmp_path / "out"
    summary = convert(_coco(tmp_path / "src", annotations), out, QUIET)
    assert summary["problems"]["counts"] == {}
    assert sum(s["masks"] for s in summary["splits"].values()) == 6
    for example in _examples(out):
        masks = _pixels(example)
        assert len(masks) == len(example.boxes) == 3
        assert np.array_equal(masks[0], triangle)
        assert np.array_equal(masks[1], square) and np.array_equal(masks[2], square)
    truth = json.loads((out / VAL_COCO_JSON).read_text())
    assert [coco_mask.area(a["segmentation"]) for a in truth["annotations"]] == [
        triangle.sum(),
        square.sum(),
        square.sum(),
    ]


def test_model_gardens_mask_rcnn_decoder_reads_the_masks(tmp_path: Path) -> None:
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    out = tmp_path / "out"
    convert(
        _coco(tmp_path / "src", [{"bbox": [8, 8, 32, 32], "segmentation": [TRIANGLE]}]), out, QUIET
    )
    record = next(iter(tf.data.TFRecordDataset([str(p) for p in sorted(out.glob("train-*"))])))
    decoded = TfExampleDecoder(include_mask=True).decode(record)
    masks = decoded["groundtruth_instance_masks"].numpy()
    assert masks.shape == (1, H, W)
    assert np.array_equal(masks[0], _triangle_pixels().astype(np.float32))


def test_yolo_seg_polygons_give_the_box_their_extent_and_the_mask(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    (src / "classes.txt").write_text("cat\ndog\n")
    for i in (1, 2):
        (src / "images" / f"{i}.jpg").write_bytes(jpeg_bytes(W, H, i))
        polygon = " ".join(f"{v / (W if k % 2 == 0 else H):.6f}" for k, v in enumerate(TRIANGLE))
        (src / "labels" / f"{i}.txt").write_text(f"1 {polygon}\n0 0.5 0.5 0.25 0.25\n")
    out = tmp_path / "out"
    summary = convert(src, out, QUIET)
    assert summary["problems"]["counts"] == {"missing_mask": 2}
    for example in _examples(out):
        (x0, y0, x1, y1), _ = example.boxes
        assert (x0 * W, y0 * H, x1 * W, y1 * H) == pytest.approx((8, 8, 40, 40), abs=1e-3)
        triangle, rectangle = _pixels(example)
        assert np.array_equal(triangle, _triangle_pixels())
        assert rectangle.sum() == 16 * 12 and rectangle[18:30, 24:40].all()


BAD_MASKS = [
    ([[8, 8, 40, 8]], "invalid_mask"),
    ([[8, 8, 40, 8, 8]], "invalid_mask"),
    ([[8, 8, "x", 8, 8, 40]], "invalid_mask"),
    ("polygon", "invalid_mask"),
    ([[100, 100, 120, 100, 100, 120]], "invalid_mask"),  # covers no pixel of the image
    ({"size": [100000, 100000], "counts": [10**10]}, "invalid_mask"),
    ({"size": [H, W], "counts": [5, 6]}, "invalid_mask"),
    ({"size": [H, W], "counts": "not an rle!"}, "invalid_mask"),
    ({"size": "big", "counts": []}, "invalid_mask"),
    ([[8, 8, 80, 8, 8, 40]], "mask_clipped"),
    ([[8, 8, 40, 40, 40, 8, 8, 40]], "self_intersecting_mask"),
]


def test_the_bad_masks_and_the_yolo_seg_source_cover_every_mask_problem() -> None:
    kinds = {kind for _, kind in BAD_MASKS} | {"missing_mask"}
    assert kinds == {k.value for k in Kind if "mask" in k.value}


@pytest.mark.parametrize(
    ("segmentation", "kind"),
    BAD_MASKS,
    ids=[
        "two-points",
        "odd",
        "text",
        "string",
        "outside",
        "bomb",
        "short-counts",
        "garbage-string",
        "bad-size",
        "clipped",
        "bowtie",
    ],
)
def test_a_bad_mask_is_a_counted_problem_and_the_box_stays(
    tmp_path: Path, segmentation: Any, kind: str
) -> None:
    out = tmp_path / "out"
    annotations = [{"bbox": [8, 8, 32, 32], "segmentation": segmentation}]
    summary = convert(_coco(tmp_path / "src", annotations), out, QUIET)
    assert summary["problems"]["counts"] == {kind: 2}, summary["problems"]["items"]
    for example in _examples(out):
        (mask,) = _pixels(example)
        assert mask.shape == (H, W) and mask.any()
        if kind == "invalid_mask":  # the box stands in for the mask
            assert mask.sum() == 32 * 32 and mask[8:40, 8:40].all()


def test_masks_are_turned_and_rescaled_as_their_boxes(tmp_path: Path) -> None:
    """Annotated on a JPEG's stored (sideways) pixels, EXIF orientation 6: the polygon and the RLE
    land where the box does on the upright image."""
    stored = np.zeros((W, H), np.uint8)  # the stored image is H wide and W tall
    stored[8:40, 8:24] = 1
    annotations = [
        {"bbox": [8, 8, 16, 32], "segmentation": [[8, 8, 24, 8, 24, 40, 8, 40]]},
        {"bbox": [8, 8, 16, 32], "segmentation": _rle(stored, compressed=True)},
    ]
    src = _coco(
        tmp_path / "src", annotations, data=lambda seed: exif_jpeg_bytes(H, W, 6, seed), size=(H, W)
    )
    out = tmp_path / "out"
    summary = convert(src, out, QUIET)
    assert set(summary["problems"]["counts"]) == {"exif_rotated"}
    for example in _examples(out):
        assert (example.width, example.height) == (W, H)
        for (x0, y0, x1, y1), mask in zip(example.boxes, _pixels(example), strict=True):
            rows, columns = np.nonzero(mask)
            assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (
                round(x0 * W),
                round(y0 * H),
                round(x1 * W),
                round(y1 * H),
            )


def test_a_dataset_without_masks_writes_no_mask_feature(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = convert(_coco(tmp_path / "src", [{"bbox": [8, 8, 32, 32]}]), out, QUIET)
    assert summary["problems"]["counts"] == {}
    assert all(not e.masks for e in _examples(out))
    assert "segmentation" not in json.loads((out / VAL_COCO_JSON).read_text())["annotations"][0]


def test_the_demo_with_masks_has_the_same_images_and_boxes_and_each_objects_pixels(
    tmp_path: Path,
) -> None:
    plain = make_demo(tmp_path / "plain", n=6, progress=False)
    masked = make_demo(tmp_path / "masked", n=6, progress=False, masks=True)
    assert masked["problems"]["counts"] == {}
    assert masked["source"]["path"].endswith("--masks")
    for split in ("train", "val"):
        counts = {k: v for k, v in masked["splits"][split].items() if k not in ("masks", "shards")}
        assert counts == {
            k: v for k, v in plain["splits"][split].items() if k not in ("masks", "shards")
        }
        assert masked["splits"][split]["masks"] == masked["splits"][split]["boxes"]
    for a, b in zip(_examples(tmp_path / "plain"), _examples(tmp_path / "masked"), strict=True):
        assert (a.encoded, a.boxes) == (b.encoded, b.boxes) and not a.masks
        for (x0, y0, x1, y1), mask in zip(b.boxes, _pixels(b), strict=True):
            rows, columns = np.nonzero(mask)  # the visible pixels lie in the object's box
            assert columns.min() >= x0 * b.width - 1 and columns.max() <= x1 * b.width + 1
            assert rows.min() >= y0 * b.height - 1 and rows.max() <= y1 * b.height + 1


def test_voc_segmentation_object_pngs_give_each_object_its_pixels(tmp_path: Path) -> None:
    """The n-th <object> is where SegmentationObject/NAME.png holds n (255, VOC's outline, is no
    object's); a missing PNG is a dataset without masks, a broken one a counted problem."""
    src = write_voc(tmp_path / "src")
    drawn = {}
    for picture in SCENE[:2]:
        indices = np.zeros((picture.height, picture.width), np.uint8)
        for n, o in enumerate(picture.objects, start=1):
            indices[o.y0 : o.y1, o.x0 : o.x1] = n
            indices[o.y0, o.x0 : o.x1] = 255
        image = Image.fromarray(indices, "P")
        image.putpalette([v for n in range(256) for v in (n, n, n)])
        (src / "SegmentationObject").mkdir(exist_ok=True)
        image.save(src / "SegmentationObject" / f"{Path(picture.name).stem}.png")
        drawn[f"JPEGImages/{picture.name}"] = indices
    (src / "SegmentationObject" / "f.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    summary = convert(src, out, QUIET)
    counts = summary["problems"]["counts"]
    assert counts == {"invalid_mask": 1, "missing_mask": 3}, summary["problems"]["items"]
    for example in _examples(out):
        if example.filename in drawn:
            indices = drawn[example.filename]
            for n, mask in enumerate(_pixels(example), start=1):
                assert np.array_equal(mask, indices == n)


def test_a_png_mask_is_read_from_its_nonzero_pixels_and_checked_before_decoding() -> None:
    """The Object Detection API's per-object PNG: its nonzero pixels are the object; one that is
    not a one-channel image, or far larger than the image (read from its header, not decoded),
    is an invalid mask and the box's rectangle stands in."""
    import io

    from tfod.data.annotations import Mask
    from tfod.data.masks import check_mask
    from tfod.data.placement import Placement

    def png(pixels: np.ndarray, mode: str) -> bytes:
        out = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(out, format="PNG")
        return out.getvalue()

    pixels = np.zeros((40, 60), np.uint8)
    pixels[10:20, 5:25] = 255
    found: list[tuple[Kind, str]] = []

    def check(data: bytes) -> Any:
        return check_mask(Mask(png=data), (5, 10, 25, 20), Placement(), (60, 40), "box 1",
                          lambda kind, detail: found.append((kind, detail)))  # fmt: skip

    checked = check(png(pixels, "L"))
    assert not found and not checked.rectangle and checked.pixels == 200
    assert np.array_equal(decode_png(checked.png), pixels > 0)

    for data, why in (
        (png(pixels, "RGB"), "is not a one-channel image (mode RGB)"),
        (png(np.zeros((40 * 5, 60 * 5), np.uint8), "L"), "is 300x200, not the image's size"),
    ):
        found.clear()
        with pytest.MonkeyPatch.context() as patch:  # refused before any decoding
            patch.setattr("tfod.data.images.decode_image", lambda _: pytest.fail("decoded"))
            assert check(data).rectangle
        assert found == [(Kind.INVALID_MASK, f"box 1: its mask {why}; its box is used as its mask")]
