"""Readers: one per annotation format, each turning a source folder into a `Source`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tfod.data.annotations import Source, clean_class_names
from tfod.data.readers.coco import read_coco
from tfod.data.readers.csv_table import read_csv
from tfod.data.readers.voc import read_voc
from tfod.data.readers.yolo import read_yolo
from tfod.errors import TfodError

READERS: dict[str, Callable[[Path], Source]] = {
    "voc": read_voc,
    "coco": read_coco,
    "yolo": read_yolo,
    "csv": read_csv,
}


def detect_format(src: Path) -> str:
    """Guess the annotation format of `src` from the files it holds."""
    if src.is_file():
        by_suffix = {".json": "coco", ".csv": "csv"}
        if src.suffix.lower() in by_suffix:
            return by_suffix[src.suffix.lower()]
        raise TfodError("a single file must be a COCO .json or a .csv; or give a folder", src)
    found = []
    if (src / "Annotations").is_dir() or any(src.glob("*.xml")):
        found.append("voc")
    if any(src.glob("annotations/*.json")) or any(src.glob("*.json")) or any(src.glob("*/*.json")):
        found.append("coco")
    if (src / "classes.txt").is_file() or any(src.glob("*.yaml")) or any(src.glob("*.yml")):
        found.append("yolo")
    if any(src.glob("*.csv")):
        found.append("csv")
    if len(found) == 1:
        return found[0]
    if not found:
        raise TfodError(
            "cannot tell the annotation format: no Annotations/ or *.xml (voc), *.json (coco), "
            "classes.txt or data.yaml (yolo), *.csv (csv); pass --format",
            src,
        )
    raise TfodError(f"looks like several formats ({', '.join(found)}); pass --format", src)


def read_source(src: Path, fmt: str = "auto") -> Source:
    """Read `src` with the reader for `fmt` ("auto" detects it)."""
    if not src.exists():
        raise TfodError("does not exist", src)
    name = detect_format(src) if fmt == "auto" else fmt
    if name not in READERS:
        raise TfodError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)}", src)
    return clean_class_names(READERS[name](src))
