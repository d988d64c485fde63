"""Images are stored as a viewer shows them: upright, 8-bit RGB; good JPEGs pass through."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.sources import Obj, Picture, write_csv
from tfod.data.convert import ConvertOptions, convert
from tfod.data.images import ImageError, prepare_image
from tfod.data.tfrecord import read_examples


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_jpeg_passes_through_byte_for_byte() -> None:
    data = _encode(Image.new("RGB", (32, 24), (10, 200, 30)), "JPEG", quality=80)
    prepared = prepare_image(data)
    assert prepared.encoded == data
    assert (prepared.format, prepared.width, prepared.height, prepared.changes) == (
        "jpeg",
        32,
        24,
        (),
    )


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("L", (8, 6), 128), "JPEG", (128, 128, 128)),
        (Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (Image.new("RGBA", (8, 6), (0, 0, 255, 0)), "PNG", (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (8, 6), (0, 0, 255, 255)), "PNG", (0, 0, 255)),
        (Image.new("P", (8, 6), 0), "PNG", None),
        (Image.fromarray(np.full((6, 8), 65535 // 2, dtype=np.uint16)), "PNG", (127, 127, 127)),
        (Image.new("RGB", (8, 6), (1, 2, 3)), "BMP", (1, 2, 3)),
    ],
    ids=[
        "grey-jpeg",
        "cmyk-jpeg",
        "transparent-png",
        "rgba-png",
        "palette-png",
        "16bit-png",
        "bmp",
    ],
)
def test_every_mode_becomes_8bit_rgb(
    image: Image.Image, fmt: str, expected: tuple[int, int, int] | None
) -> None:
    prepared = prepare_image(_encode(image, fmt))
    pixels = _decode(prepared.encoded)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 8, 3)
    assert prepared.changes, "a converted image must say what changed"
    if expected is not None:
        tolerance = 3 if fmt == "JPEG" else 1
        assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - expected).max() <= tolerance
    assert prepared.format == ("jpeg" if fmt == "JPEG" else "png")


@pytest.mark.parametrize(
    "data", [b"", b"not an image at all", None], ids=["empty", "garbage", "truncated"]
)
def test_unreadable_bytes_raise_image_error(data: bytes | None) -> None:
    if data is None:
        full = _encode(
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
            "JPEG",
        )
        data = full[: len(full) // 2]
    with pytest.raises(ImageError):
        prepare_image(data)


def test_exif_rotated_jpeg_comes_out_upright_with_correct_boxes(tmp_path: Path) -> None:
    # The upright view: 80x40, grey, with a red block at x 50..70, y 5..25.
    upright = np.full((40, 80, 3), 120, dtype=np.uint8)
    upright[5:25, 50:70] = (230, 20, 20)
    # Stored rotated 90 degrees counter-clockwise, with EXIF orientation 6 ("rotate 90 CW to view").
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    assert stored.size == (40, 80)
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "src"
    write_csv(src, [Picture("r.jpg", 80, 40, [Obj("block", 50, 5, 70, 25)])])
    (src / "images" / "r.jpg").write_bytes(_encode(stored, "JPEG", quality=95, exif=exif))

    summary = convert(
        src, tmp_path / "out", ConvertOptions(workers=1, progress=False, val_fraction=0.0)
    )
    assert summary["problems"]["counts"] == {}
    assert summary["images_changed"] == {"exif_orientation_6": 1}
    (record,) = list(read_examples(sorted((tmp_path / "out").glob("train-*"))))
    assert (record.width, record.height) == (80, 40)
    pixels = _decode(record.encoded)
    assert pixels.shape == (40, 80, 3)
    x0, y0, x1, y1 = record.boxes[0]
    inside = pixels[
        round(y0 * 40) + 2 : round(y1 * 40) - 2, round(x0 * 80) + 2 : round(x1 * 80) - 2
    ]
    assert inside.reshape(-1, 3).mean(axis=0) == pytest.approx((230, 20, 20), abs=12)
    assert Image.open(io.BytesIO(record.encoded)).getexif().get(0x0112, 1) == 1
    assert json.loads((tmp_path / "out" / "val_coco.json").read_text())["images"] == []
