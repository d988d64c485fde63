"""TF Examples in the layout Model Garden's `TfExampleDecoder` reads, written as sharded TFRecords.

Keys (the Object Detection API's): image/{encoded,format,height,width,source_id,filename,key/sha256}
and image/object/{bbox/xmin,ymin,xmax,ymax (normalised), class/label, class/text, is_crowd, area
(pixels), difficult, truncated}, and for a dataset with masks image/object/mask (a one-channel
0/1 PNG per box, as Model Garden's `create_coco_tf_record` writes them). `image/source_id` is a decimal string: Model Garden parses it to
int64 and the COCO ground truth uses the same number as image id.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfod.data.boxes import CheckedBox
from tfod.data.images import PreparedImage
from tfod.errors import TfodError


@dataclass(frozen=True)
class DecodedExample:
    """An example read back from a TFRecord (for statistics, plots and tests)."""

    source_id: int
    filename: str
    encoded: bytes
    format: str
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]  # normalised (xmin, ymin, xmax, ymax)
    labels: list[int]
    texts: list[str]
    is_crowd: list[int]
    area: list[float]
    masks: list[bytes]  # PNG, one per box in a dataset with masks


def build_example(
    source_id: int, filename: str, image: PreparedImage, boxes: Sequence[CheckedBox]
) -> bytes:
    """Serialize one image and its boxes as a tf.train.Example."""
    import tensorflow as tf

    def b(values: list[bytes]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def i(values: list[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def f(values: list[float]) -> Any:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    w, h = image.width, image.height
    feature = {
        "image/encoded": b([image.encoded]),
        "image/format": b([image.format.encode()]),
        "image/height": i([h]),
        "image/width": i([w]),
        "image/source_id": b([str(source_id).encode()]),
        "image/filename": b([filename.encode()]),
        "image/key/sha256": b([hashlib.sha256(image.encoded).hexdigest().encode()]),
        "image/object/bbox/xmin": f([x.xmin for x in boxes]),
        "image/object/bbox/ymin": f([x.ymin for x in boxes]),
        "image/object/bbox/xmax": f([x.xmax for x in boxes]),
        "image/object/bbox/ymax": f([x.ymax for x in boxes]),
        "image/object/class/label": i([x.label_id for x in boxes]),
        "image/object/class/text": b([x.label.encode() for x in boxes]),
        "image/object/is_crowd": i([int(x.is_crowd) for x in boxes]),
        "image/object/area": f([box_area(x, w, h) for x in boxes]),
        "image/object/difficult": i([int(x.difficult) for x in boxes]),
        "image/object/truncated": i([int(x.truncated) for x in boxes]),
    }
    if any(x.mask is not None for x in boxes):
        feature["image/object/mask"] = b([x.mask.png for x in boxes if x.mask is not None])
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return bytes(example.SerializeToString())


def box_area(box: CheckedBox, width: int, height: int) -> float:
    """Box area in pixels of the stored image (what COCO's small/medium/large buckets use)."""
    return (box.xmax - box.xmin) * width * (box.ymax - box.ymin) * height


def shard_names(split: str, count: int) -> list[str]:
    """File names of `count` shards of `split`: train-00000-of-00004.tfrecord, ..."""
    return [f"{split}-{index:05d}-of-{count:05d}.tfrecord" for index in range(count)]


class ShardWriter:
    """Writes examples round-robin into a fixed set of shard files.

    A failed write (a full disk, a folder made read-only) is a `TfodError` naming the shard.
    """

    def __init__(self, directory: Path, split: str, count: int) -> None:
        import tensorflow as tf

        self.paths = [directory / name for name in shard_names(split, count)]
        self._writers = []
        for path in self.paths:
            with _write_errors(path):
                self._writers.append(tf.io.TFRecordWriter(str(path)))
        self._next = 0

    def write(self, record: bytes) -> None:
        index = self._next % len(self._writers)
        with _write_errors(self.paths[index]):
            self._writers[index].write(record)
        self._next += 1

    def close(self) -> None:
        for path, writer in zip(self.paths, self._writers, strict=False):
            with _write_errors(path):
                writer.close()


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    import tensorflow as tf

    try:
        yield
    except (OSError, tf.errors.OpError) as err:
        detail = err.strerror if isinstance(err, OSError) else err.message
        raise TfodError(f"cannot write: {detail}", path) from None


def read_examples(paths: Sequence[Path]) -> Iterator[DecodedExample]:
    """Decode the examples of TFRecord files, in file order."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset([str(p) for p in paths]).as_numpy_iterator():
        yield _decode(tf.train.Example.FromString(record))


def _decode(example: Any) -> DecodedExample:
    feature = example.features.feature

    def floats(key: str) -> list[float]:
        return list(feature[key].float_list.value)

    def ints(key: str) -> list[int]:
        return list(feature[key].int64_list.value)

    def text(key: str) -> str:
        values = feature[key].bytes_list.value
        return values[0].decode() if values else ""

    boxes = list(
        zip(
            floats("image/object/bbox/xmin"),
            floats("image/object/bbox/ymin"),
            floats("image/object/bbox/xmax"),
            floats("image/object/bbox/ymax"),
            strict=True,
        )
    )
    return DecodedExample(
        source_id=int(text("image/source_id")),
        filename=text("image/filename"),
        encoded=bytes(feature["image/encoded"].bytes_list.value[0]),
        format=text("image/format"),
        width=ints("image/width")[0],
        height=ints("image/height")[0],
        boxes=boxes,
        labels=ints("image/object/class/label"),
        texts=[v.decode() for v in feature["image/object/class/text"].bytes_list.value],
        is_crowd=ints("image/object/is_crowd"),
        area=floats("image/object/area"),
        masks=list(feature["image/object/mask"].bytes_list.value),
    )
