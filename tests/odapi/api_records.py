"""TFRecords written the Object Detection API's way (as its create_coco_tf_record.py does), by our
own small writer: the test input for `tfod data import-tfrecord` and `tfod import pipeline`."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image


def label_map_text(categories: list[dict[str, Any]]) -> str:
    """A label map as the API's sample files write it (display_name included)."""
    return "".join(
        f'item {{\n  name: "{c["name"]}"\n  id: {c["id"]}\n  display_name: "{c["name"]}"\n}}\n'
        for c in categories
    )


def api_example(
    root: Path,
    image: dict[str, Any],
    annotations: list[dict[str, Any]],
    names: dict[int, str],
    source_id: str | None = None,
) -> bytes:
    """One Example in the API's layout: normalised boxes, COCO category ids, a string source id;
    where the annotations have a `segmentation`, each object's mask as a 0/1 PNG of the image."""
    encoded = (root / image["file_name"]).read_bytes()
    w, h = image["width"], image["height"]

    def floats(values: list[float]) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values: list[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values: list[bytes]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    boxes = [a["bbox"] for a in annotations]
    feature = {
        "image/height": ints([h]),
        "image/width": ints([w]),
        "image/filename": strings([image["file_name"].encode()]),
        "image/source_id": strings([(source_id or str(image["id"])).encode()]),
        "image/key/sha256": strings([hashlib.sha256(encoded).hexdigest().encode()]),
        "image/encoded": strings([encoded]),
        "image/format": strings([b"jpeg"]),
        "image/object/bbox/xmin": floats([x / w for x, _, _, _ in boxes]),
        "image/object/bbox/xmax": floats([(x + bw) / w for x, _, bw, _ in boxes]),
        "image/object/bbox/ymin": floats([y / h for _, y, _, _ in boxes]),
        "image/object/bbox/ymax": floats([(y + bh) / h for _, y, _, bh in boxes]),
        "image/object/class/text": strings([names[a["category_id"]].encode() for a in annotations]),
        "image/object/class/label": ints([a["category_id"] for a in annotations]),
        "image/object/is_crowd": ints([a.get("iscrowd", 0) for a in annotations]),
        "image/object/area": floats([bw * bh for _, _, bw, bh in boxes]),
    }
    if any("segmentation" in a for a in annotations):
        feature["image/object/mask"] = strings([mask_png(a, w, h) for a in annotations])
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return bytes(example.SerializeToString())


def mask_png(annotation: dict[str, Any], width: int, height: int) -> bytes:
    """The annotation's mask as the API's create_coco_tf_record.py stores it."""
    from pycocotools import mask as coco_mask

    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        segmentation = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        segmentation = coco_mask.frPyObjects(segmentation, height, width)
    pixels = coco_mask.decode(segmentation)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def read_coco(
    source: Path,
) -> tuple[dict[int, str], list[dict[str, Any]], Callable[[dict[str, Any]], list[dict[str, Any]]]]:
    """SOURCE/annotations.json: the class names by id, the images, and each image's boxes."""
    coco = json.loads((source / "annotations.json").read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return names, coco["images"], lambda image: by_image.get(image["id"], [])


def write_api_dataset(
    source: Path, out: Path, val_files: set[str], shards: int = 2
) -> tuple[list[Path], list[Path], Path]:
    """SOURCE/annotations.json (COCO) -> OUT/{train,val}.record-0000N-of-0000M and label_map.pbtxt.

    Returns:
        The train record files, the val record files and the label map.
    """
    names, images, boxes = read_coco(source)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {}
    for split in ("train", "val"):
        files[split] = [out / f"{split}.record-{i:05d}-of-{shards:05d}" for i in range(shards)]
        writers = [tf.io.TFRecordWriter(str(p)) for p in files[split]]
        chosen = [i for i in images if (i["file_name"] in val_files) == (split == "val")]
        for index, image in enumerate(chosen):
            record = api_example(source, image, boxes(image), names)
            writers[index % shards].write(record)
        for writer in writers:
            writer.close()
    label_map = out / "label_map.pbtxt"
    label_map.write_text(label_map_text([{"id": i, "name": n} for i, n in names.items()]))
    return files["train"], files["val"], label_map
