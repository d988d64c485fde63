"""`label_map.pbtxt` in the Object Detection API's StringIntLabelMap text format."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from tfod import atomic
from tfod.errors import TfodError
from tfod.protos import string_int_label_map_pb2 as label_map_pb2
from tfod.textfile import read_text


def format_label_map(classes: list[str]) -> str:
    """The label map text for `classes`, numbered 1..N in order (0 is the background)."""
    message = label_map_pb2.StringIntLabelMap()
    for class_id, name in enumerate(classes, start=1):
        message.item.add(id=class_id, name=name)
    return str(text_format.MessageToString(message))


def write_label_map(path: Path, classes: list[str]) -> None:
    """Write the label map for `classes` to `path` atomically."""
    atomic.write_text(path, format_label_map(classes))


def read_label_map(path: Path) -> dict[int, str]:
    """Class id -> name from a label map file, checked: ids unique and >= 1, names unique.

    Raises:
        TfodError: the file is missing, not a label map, or inconsistent.
    """
    text = read_text(path, "label map")
    message = label_map_pb2.StringIntLabelMap()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise TfodError(
            f"not a label map (expected items like \"item {{ id: 1 name: 'car' }}\"): {err}", path
        ) from err
    classes: dict[int, str] = {}
    for item in message.item:
        name = (item.name or item.display_name).strip()
        if not name:
            raise TfodError(f"the item with id {item.id} has no name", path)
        if item.id < 1:
            raise TfodError(
                f"class {name!r} has id {item.id}; ids start at 1 (0 is the background)", path
            )
        if item.id in classes:
            raise TfodError(f"id {item.id} is used by {classes[item.id]!r} and {name!r}", path)
        if name in classes.values():
            raise TfodError(f"class name {name!r} appears twice", path)
        classes[item.id] = name
    if not classes:
        raise TfodError("label map has no items", path)
    return dict(sorted(classes.items()))
