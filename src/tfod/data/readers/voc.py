"""Pascal VOC: one XML per image (`Annotations/*.xml`, or XMLs beside the images as LabelImg
writes them), images in `JPEGImages/`, optional split lists in `ImageSets/Main/{train,val}.txt`,
optional instance masks in `SegmentationObject/*.png` (the n-th object's pixels hold n)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tfod.data.annotations import Box, Kind, Mask, Problem, Source, SourceImage
from tfod.data.readers.common import ImageLocator, relative, walk_files
from tfod.errors import TfodError


def read_voc(src: Path) -> Source:
    """Read a Pascal VOC folder."""
    ann_dir = src / "Annotations" if (src / "Annotations").is_dir() else src
    xmls = list(walk_files(ann_dir, frozenset({".xml"})))
    if not xmls:
        raise TfodError("no Pascal VOC XML files found (expected Annotations/*.xml)", src)
    splits = _image_sets(src)
    problems: list[Problem] = []
    locator = ImageLocator(src, problems)
    images: list[SourceImage] = []
    for xml_path in xmls:
        rel_xml = relative(src, xml_path)
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as err:
            problems.append(Problem(Kind.BAD_ANNOTATION, rel_xml, f"not valid XML: {err}"))
            continue
        segmentation = src / "SegmentationObject" / f"{xml_path.stem}.png"
        boxes = _objects(root, rel_xml, problems, segmentation if segmentation.is_file() else None)
        name = root.findtext("filename") or ""
        found = locator.locate(
            name, [src / "JPEGImages", xml_path.parent, src], rel_xml, len(boxes)
        )
        if found is None:
            continue
        path, rel = found
        images.append(
            SourceImage(path, rel, rel_xml, boxes, _size(root), split=splits.get(xml_path.stem))
        )
    classes = sorted({b.label for image in images for b in image.boxes})
    return Source("voc", src, images, classes, problems)


def _objects(
    root: ET.Element, rel_xml: str, problems: list[Problem], segmentation: Path | None
) -> list[Box]:
    boxes = []
    for index, obj in enumerate(root.iter("object"), start=1):
        where = f"object {index}"
        label = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        try:
            if not label or bnd is None:
                raise ValueError("missing <name> or <bndbox>")
            x0, y0, x1, y1 = (
                float(bnd.findtext(t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax")
            )
            difficult = _flag(obj, "difficult")
            truncated = _flag(obj, "truncated")
        except ValueError as err:
            problems.append(Problem(Kind.BAD_ANNOTATION, rel_xml, f"{where}: {err}"))
            continue
        mask = Mask(instance=(segmentation, index)) if segmentation is not None else None
        boxes.append(Box(label, x0, y0, x1, y1, where, False, difficult, truncated, mask))
    return boxes


def _flag(obj: ET.Element, tag: str) -> bool:
    text = (obj.findtext(tag) or "0").strip()
    return float(text) != 0 if text else False


def _size(root: ET.Element) -> tuple[int, int] | None:
    try:
        width = int(float(root.findtext("size/width") or 0))
        height = int(float(root.findtext("size/height") or 0))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _image_sets(src: Path) -> dict[str, str]:
    """Image id -> split from ImageSets/Main/{train,val}.txt, where present."""
    splits: dict[str, str] = {}
    for split in ("train", "val"):
        listing = src / "ImageSets" / "Main" / f"{split}.txt"
        if listing.is_file():
            for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.split():
                    splits[line.split()[0]] = split
    return splits
