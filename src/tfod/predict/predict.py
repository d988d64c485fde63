"""`tfod predict`: run any tfod model over images, folders and videos.

Writes each input annotated (labelled boxes with scores) under OUT, keeping folder structure
(images as .jpg or .png, videos as .mp4), plus `detections.json` (COCO results) and `images.json`
(the annotated copies and video frames as COCO images, and the categories, so
`COCO("images.json").loadRes("detections.json")` works). Inputs that cannot
be read are skipped, counted and named; nothing half-written is left behind.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfod import atomic
from tfod.data.dataset import LABEL_MAP
from tfod.data.images import ImageError, decode_image
from tfod.data.labelmap import read_label_map
from tfod.errors import TfodError, describe
from tfod.predict.models import DetectionModel, TFLiteModel, onnx_model, saved_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
DETECTIONS_JSON = "detections.json"
IMAGES_JSON = "images.json"
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


def load_model(path: Path, checkpoint: str = "best") -> DetectionModel:
    """A run folder (its `checkpoint`), a SavedModel folder, a .tflite or an .onnx file."""
    from tfod.predict.models import checkpoint_model

    if (path / "run.json").is_file():
        from tfod.model.experiment import dataset_dir, load_experiment
        from tfod.runs.rundir import RunDir, pick_checkpoint

        run = RunDir(path)
        _, prefix, _ = pick_checkpoint(run, checkpoint)
        experiment = load_experiment(run)
        labels_path = dataset_dir(experiment) / LABEL_MAP
        return checkpoint_model(experiment, prefix, read_label_map(labels_path), path.name)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return saved_model(path)
    if path.is_file() and path.suffix == ".tflite":
        return TFLiteModel(path)
    if path.is_file() and path.suffix == ".onnx":
        return onnx_model(path)
    raise TfodError(
        "MODEL must be a run folder (with run.json), a SavedModel folder, a .tflite or an .onnx file",
        path,
    )


@dataclass
class Prediction:
    """What `predict` did."""

    out: Path
    images: int = 0
    videos: int = 0
    frames: int = 0
    detections: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def output_name(name: Path) -> Path:
    """Where an input's annotated copy goes under OUT: videos as .mp4, PNGs as .png (lossless
    stays lossless), other images as .jpg."""
    suffix = name.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return name.with_suffix(".mp4")
    return name.with_suffix(".png" if suffix == ".png" else ".jpg")


def collect(inputs: list[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Image and video files named by `inputs` (files or folders, searched recursively).

    Returns:
        ([(file, its annotated copy relative to OUT)], [(input, why it was skipped)]). Two
        inputs that would write the same copy (a/x.jpg and b/x.jpg given as files, x.bmp beside
        x.jpg) are not overwritten: the second is skipped, naming the first.
    """
    found: list[tuple[Path, Path]] = []
    skipped: list[tuple[Path, str]] = []
    taken: dict[Path, Path] = {}
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES

    def add(path: Path, name: Path) -> None:
        target = output_name(name)
        if target in taken:
            skipped.append((path, f"its output {target} is already written for {taken[target]}"))
            return
        taken[target] = path
        found.append((path, target))

    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in media)
            if not files:
                skipped.append((item, "folder has no images or videos"))
            for path in files:
                add(path, path.relative_to(item.parent))
        elif item.is_file() and item.suffix.lower() in media:
            add(item, Path(item.name))
        elif item.exists():
            skipped.append((item, f"not an image or video ({', '.join(sorted(media))})"))
        else:
            skipped.append((item, "no such file or folder"))
    return found, skipped


def predict(
    model: DetectionModel,
    inputs: list[Path],
    out: Path,
    threshold: float = 0.3,
    on_frame: Callable[[], None] | None = None,
) -> Prediction:
    """Detect on every image and video frame of `inputs`; write annotated copies and COCO JSON."""
    files, skipped = collect(inputs)
    result = Prediction(out=out, skipped=skipped)
    images: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []

    def detect(image: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
        found = model.detect(image).above(threshold)
        entry["id"] = len(images) + 1
        images.append(entry)
        detections.extend(found.coco(entry["id"]))
        result.detections += len(found.scores)
        if on_frame is not None:
            on_frame()
        return draw(image, found, model.labels)

    for path, name in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            problem = _predict_video(path, out, name, detect, result)
        else:
            problem = _predict_image(path, out, name, detect)
            result.images += problem is None
        if problem is not None:
            result.skipped.append((path, problem))
    categories = [{"id": i, "name": n} for i, n in sorted(model.labels.items())]
    atomic.write_json(out / DETECTIONS_JSON, detections)
    atomic.write_json(
        out / IMAGES_JSON, {"images": images, "categories": categories, "annotations": []}
    )
    return result


def count_frames(inputs: list[Path]) -> int:
    """How many images and video frames `inputs` hold (for a progress bar)."""
    import cv2

    total = 0
    for path, _ in collect(inputs)[0]:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def _predict_image(
    path: Path, out: Path, name: Path, detect: Callable[[np.ndarray, dict[str, Any]], Any]
) -> str | None:
    import tensorflow as tf
    from PIL import Image, ImageOps

    try:
        with decode_image(path.read_bytes()) as opened:
            image = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (OSError, ImageError, ValueError) as err:
        return f"cannot read image: {err}"
    height, width = image.shape[:2]
    try:
        annotated = detect(image, {"file_name": str(name), "width": width, "height": height})
    except tf.errors.InvalidArgumentError as err:  # e.g. 20000x1: resized to a height of 0
        return f"the model cannot take this {width}x{height} image ({describe(err)})"
    buffer = io.BytesIO()
    kind = "PNG" if name.suffix == ".png" else "JPEG"
    Image.fromarray(annotated).save(buffer, kind, **({"quality": 92} if kind == "JPEG" else {}))
    atomic.write_bytes(out / name, buffer.getvalue())
    return None


def _frames(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
    finally:
        capture.release()


def _predict_video(
    path: Path,
    out: Path,
    name: Path,
    detect: Callable[[np.ndarray, dict[str, Any]], np.ndarray],
    result: Prediction,
) -> str | None:
    import cv2

    writer = None
    frames = 0
    try:
        with atomic.atomic_path(out / name) as tmp:
            for frame, fps in _frames(path):
                height, width = frame.shape[:2]
                if writer is None:
                    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                    writer = cv2.VideoWriter(str(tmp), fourcc, fps, (width, height))
                entry = {"file_name": str(name), "frame": frames, "width": width, "height": height}
                writer.write(cv2.cvtColor(detect(frame, entry), cv2.COLOR_RGB2BGR))
                frames += 1
            if writer is None:
                raise _NoFrames
            writer.release()
    except _NoFrames:
        return "cannot read video: OpenCV decoded no frames (unsupported codec or damaged file)"
    result.videos += 1
    result.frames += frames
    return None


class _NoFrames(Exception):
    """A video file without a frame OpenCV can decode."""


def draw(image: np.ndarray, detections: Any, labels: dict[int, str]) -> np.ndarray:
    """`image` with each detection's mask (tinted), box and "label score" drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(_tinted(image, detections))
    pen = ImageDraw.Draw(canvas)
    size = max(10, min(canvas.size) // 30)
    font = ImageFont.load_default(size=size)
    width = max(1, min(canvas.size) // 200)
    for (y0, x0, y1, x1), score, cls in zip(
        detections.boxes, detections.scores, detections.classes, strict=True
    ):
        colour = PALETTE[(int(cls) - 1) % len(PALETTE)]
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{labels.get(int(cls), f'class {int(cls)}')} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text, font=font)
        top_y = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0
        pen.rectangle([x0, top_y, x0 + right - left + 4, top_y + bottom - top + 2], fill=colour)
        pen.text((x0 + 2, top_y - (top - y0)), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _tinted(image: np.ndarray, detections: Any) -> np.ndarray:
    """`image` with each detection's mask, if it has masks, tinted in its class's colour."""
    if getattr(detections, "masks", None) is None:
        return image
    tinted = image.astype(np.float32)
    for pixels, cls in zip(detections.masks, detections.classes, strict=True):
        colour = np.asarray(PALETTE[(int(cls) - 1) % len(PALETTE)], np.float32)
        inside = pixels > 0
        tinted[inside] = 0.55 * tinted[inside] + 0.45 * colour
    return tinted.astype(np.uint8)
