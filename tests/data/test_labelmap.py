"""Label maps: the Object Detection API text format, read back with checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfod.data.labelmap import format_label_map, read_label_map, write_label_map
from tfod.errors import TfodError


def test_round_trip_in_the_standard_format(tmp_path: Path) -> None:
    path = tmp_path / "label_map.pbtxt"
    write_label_map(path, ["car", "person's bike"])
    text = path.read_text()
    assert 'item {\n  name: "car"\n  id: 1\n}' in text
    assert read_label_map(path) == {1: "car", 2: "person's bike"}


def test_reads_object_detection_api_files(tmp_path: Path) -> None:
    path = tmp_path / "od.pbtxt"
    path.write_text(
        "item {\n  id: 2\n  name: 'dog'\n}\nitem { id: 1 name: 'cat' display_name: 'Cat' }\n"
    )
    assert read_label_map(path) == {1: "cat", 2: "dog"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item { id: 0 name: 'bg' }", "ids start at 1"),
        ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "id 1 is used"),
        ("item { id: 1 name: 'a' } item { id: 2 name: 'a' }", "appears twice"),
        ("item { idx: 1 }", "not a label map"),
        ("", "no items"),
    ],
)
def test_bad_label_maps_name_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.pbtxt"
    path.write_text(text)
    with pytest.raises(TfodError, match=message) as info:
        read_label_map(path)
    assert info.value.path == str(path)


def test_missing_label_map(tmp_path: Path) -> None:
    with pytest.raises(TfodError, match="cannot read the label map"):
        read_label_map(tmp_path / "nope.pbtxt")


def test_format_numbers_from_one() -> None:
    assert format_label_map(["a"]) == 'item {\n  name: "a"\n  id: 1\n}\n'
