"""Object Detection API inputs built to break an importer: image bombs inside records, features
of the wrong type, label maps and pipeline.configs that are devices, huge, not UTF-8, nameless or
nested thousands deep, a validation split with no record in it. Each is one `error:` line, or a
counted skip naming the record file, the record and the key, with the rest imported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tensorflow as tf

from tests.data.sources import jpeg_bytes
from tests.helpers import run_tfod
from tests.robustness.corpus import _png_header

LABEL_MAP = "item { id: 1 name: 'cat' }\n"


def _example(encoded: bytes, index: int, **override: tf.train.Feature) -> bytes:
    def ints(*values: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(*values: float) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def strings(*values: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/height": ints(30),
        "image/width": ints(40),
        "image/filename": strings(f"{index}.jpg".encode()),
        "image/source_id": strings(str(index).encode()),
        "image/encoded": strings(encoded),
        "image/object/bbox/xmin": floats(0.1),
        "image/object/bbox/ymin": floats(0.1),
        "image/object/bbox/xmax": floats(0.6),
        "image/object/bbox/ymax": floats(0.7),
        "image/object/class/label": ints(1),
        **override,
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _records(path: Path, examples: list[bytes]) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    return path


def _good(n: int, start: int = 1) -> list[bytes]:
    return [_example(jpeg_bytes(40, 30, i), i) for i in range(start, start + n)]


def _import(root: Path, train: Path, val: Path, label_map: Path) -> list[str]:
    return [
        "data", "import-tfrecord", "--train", str(train), "--val", str(val),
        "--label-map", str(label_map), "--out", str(root / "out"), "--copy",
    ]  # fmt: skip


@pytest.fixture
def label_map(tmp_path: Path) -> Path:
    path = tmp_path / "label_map.pbtxt"
    path.write_text(LABEL_MAP)
    return path


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def _with(key: str, value: tf.train.Feature) -> Callable[[int], bytes]:
    """A good record `i` whose feature `key` is `value` instead."""
    return lambda i: _example(jpeg_bytes(40, 30, i), i, **{key: value})


BAD_RECORDS: dict[str, tuple[Callable[[int], bytes], str, str]] = {
    "png bomb": (lambda i: _example(_png_header(40000, 40000), i), "unreadable_image", "pixels"),
    "144 Mpx image": (lambda i: _example(_png_header(12000, 12000), i), "unreadable_image", "pixels"),
    "width as bytes": (_with("image/width", _bytes(b"40")), "bad_annotation", "image/width holds bytes values where int64 values belong"),
    "NaN label": (_with("image/object/class/label", _float(float("nan"))), "bad_annotation", "image/object/class/label holds float values where int64"),
    "xmin as bytes": (_with("image/object/bbox/xmin", _bytes(b"0.1")), "bad_annotation", "image/object/bbox/xmin holds bytes values where float values"),
    "NaN xmin": (_with("image/object/bbox/xmin", _float(float("nan"))), "invalid_box", ""),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_a_bad_record_is_a_counted_skip_naming_file_record_and_key(
    case: str, tmp_path: Path, label_map: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, kind, detail = BAD_RECORDS[case]
    train = _records(tmp_path / "train.record", [*_good(3), make(4), *_good(2, start=5)])
    val = _records(tmp_path / "val.record", _good(2, start=10))
    code, output = run_tfod(_import(tmp_path, train, val, label_map), capsys)
    assert code == 0 and "Traceback" not in output, output
    summary = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert summary["problems"]["counts"] == {kind: 1}
    [problem] = summary["problems"]["items"]
    assert problem["file"] == "train.record#3" and detail in problem["detail"], problem
    assert summary["splits"]["train"]["images"] == 5 + (kind == "invalid_box")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("device", "the label map must be a regular file, not a device, pipe or socket"),
        ("latin-1", "the label map is not UTF-8 text: byte 23 is b'\\xe9'"),
        ("nameless", "the item with id 1 has no name"),
        ("huge", "the label map is 9.0 MB, more than the 8 MB such a file can be"),
    ],
)
def test_a_bad_label_map_is_one_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _records(tmp_path / "train.record", _good(3))
    val = _records(tmp_path / "val.record", _good(2, start=10))
    path = tmp_path / "label_map.pbtxt"
    if content == "device":
        path = Path("/dev/zero")
    elif content == "latin-1":
        path.write_bytes("item { id: 1 name: 'caf\u00e9' }\n".encode("latin-1"))
    elif content == "nameless":
        path.write_text("item { id: 1 }\n")
    else:
        path.write_text("#" * (9 * 10**6))
    code, output = run_tfod(_import(tmp_path, train, val, path), capsys)
    assert code == 1 and "Traceback" not in output
    assert f"error: {path}: {message}" in " ".join(output.split()), output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("val", ["/etc/passwd", "/dev/zero", "empty"])
def test_a_validation_split_with_no_usable_record_is_an_error(
    val: str, tmp_path: Path, label_map: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _records(tmp_path / "train.record", _good(3))
    path = _records(tmp_path / "empty.record", []) if val == "empty" else Path(val)
    code, output = run_tfod(_import(tmp_path, train, path, label_map), capsys)
    assert code == 1 and "Traceback" not in output, output
    flat = " ".join(output.split())
    assert "no usable image in the val records" in flat or "must be a regular file" in flat, output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("nested", "its braces nest thousands deep"),
        ("huge", "the pipeline.config is 50.0 MB, more than the 8 MB"),
        ("latin-1", "the pipeline.config is not UTF-8 text: byte"),
    ],
)
def test_a_hostile_pipeline_config_is_one_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pipeline.config"
    if content == "nested":
        path.write_text("model { ssd { " + "feature_extractor { " * 4000 + "}" * 4002)
    elif content == "huge":
        path.write_text("#" * (50 * 10**6))
    else:
        path.write_bytes("model { } # caf\u00e9\n".encode("latin-1"))
    code, output = run_tfod(
        ["import", "pipeline", str(path), "--out", str(tmp_path / "t.yaml")], capsys
    )
    assert code == 1 and "Traceback" not in output, output
    assert message in " ".join(output.split()), output


def test_a_pipeline_config_with_a_nan_rate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    source = (
        Path(__file__).parents[1] / "odapi" / "configs" / "ssd_mobilenet_v2_fpnlite_320x320.config"
    )
    path = tmp_path / "pipeline.config"
    path.write_text(
        re.sub(r"learning_rate_base: [0-9.e-]+", "learning_rate_base: nan", source.read_text())
    )
    code, output = run_tfod(
        ["import", "pipeline", str(path), "--out", str(tmp_path / "t.yaml")], capsys
    )
    assert code == 1 and "Traceback" not in output
    assert "train.learning_rate" in output and "finite number" in output, output
    assert not (tmp_path / "t.yaml").exists()
