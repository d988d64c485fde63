"""Generated annotation sources for the data tests: one scene, written in every format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Obj:
    label: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class Picture:
    name: str
    width: int
    height: int
    objects: list[Obj] = field(default_factory=list)


# Classes in alphabetical order, as VOC and CSV readers number them; COCO gets non-contiguous ids.
CLASSES = ("cat", "dog")
COCO_IDS = {"cat": 7, "dog": 12}

SCENE = [
    Picture("a.jpg", 64, 48, [Obj("cat", 4, 6, 30, 40), Obj("dog", 20, 10, 60, 44)]),
    Picture("b.jpg", 80, 60, [Obj("dog", 0, 0, 80, 60)]),
    Picture("c.jpg", 50, 50, []),
    Picture("d.jpg", 40, 72, [Obj("cat", 10, 12, 18, 20), Obj("cat", 20, 30, 36, 70)]),
    Picture("e.jpg", 96, 32, [Obj("dog", 48, 8, 90, 30)]),
    Picture("f.jpg", 60, 60, [Obj("cat", 15, 15, 45, 45)]),
]


def jpeg_bytes(width: int, height: int, seed: int) -> bytes:
    """A small deterministic noise JPEG."""
    import io

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def exif_jpeg_bytes(width: int, height: int, orientation: int, seed: int) -> bytes:
    """A noise JPEG stored `width` x `height` with the EXIF orientation tag `orientation`."""
    import io

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def _images(folder: Path, scene: list[Picture]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, pic in enumerate(scene):
        (folder / pic.name).write_bytes(jpeg_bytes(pic.width, pic.height, index))


def write_voc(root: Path, scene: list[Picture] = SCENE) -> Path:
    _images(root / "JPEGImages", scene)
    (root / "Annotations").mkdir(parents=True)
    for pic in scene:
        objects = "".join(
            f"<object><name>{o.label}</name><difficult>0</difficult><truncated>0</truncated>"
            f"<bndbox><xmin>{o.x0}</xmin><ymin>{o.y0}</ymin><xmax>{o.x1}</xmax><ymax>{o.y1}</ymax>"
            "</bndbox></object>"
            for o in pic.objects
        )
        xml = (
            f"<annotation><folder>VOC</folder><filename>{pic.name}</filename>"
            f"<size><width>{pic.width}</width><height>{pic.height}</height><depth>3</depth></size>"
            f"{objects}</annotation>"
        )
        (root / "Annotations" / f"{Path(pic.name).stem}.xml").write_text(xml)
    return root


def write_coco(root: Path, scene: list[Picture] = SCENE) -> Path:
    _images(root / "images", scene)
    images, annotations = [], []
    for image_id, pic in enumerate(scene, start=100):
        images.append(
            {"id": image_id, "file_name": pic.name, "width": pic.width, "height": pic.height}
        )
        for o in pic.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": COCO_IDS[o.label],
                    "bbox": [o.x0, o.y0, o.x1 - o.x0, o.y1 - o.y0],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": name} for name, cid in COCO_IDS.items()]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def write_yolo(root: Path, scene: list[Picture] = SCENE) -> Path:
    _images(root / "images", scene)
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for pic in scene:
        lines = []
        for o in pic.objects:
            cx, cy = (o.x0 + o.x1) / 2 / pic.width, (o.y0 + o.y1) / 2 / pic.height
            w, h = (o.x1 - o.x0) / pic.width, (o.y1 - o.y0) / pic.height
            lines.append(f"{CLASSES.index(o.label)} {cx:.10f} {cy:.10f} {w:.10f} {h:.10f}")
        (root / "labels" / f"{Path(pic.name).stem}.txt").write_text("\n".join(lines))
    return root


def write_csv(root: Path, scene: list[Picture] = SCENE) -> Path:
    _images(root / "images", scene)
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for pic in scene:
        if not pic.objects:
            rows.append(f"{pic.name},{pic.width},{pic.height},,,,,")
        for o in pic.objects:
            rows.append(
                f"{pic.name},{pic.width},{pic.height},{o.label},{o.x0},{o.y0},{o.x1},{o.y1}"
            )
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


WRITERS = {"voc": write_voc, "coco": write_coco, "yolo": write_yolo, "csv": write_csv}
