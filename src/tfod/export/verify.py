"""`tfod verify` / `tfod export --verify`: every exported artefact scored on the validation split.

Each artefact runs over the validation images one at a time (batch 1), its detections mapped to
original-image pixels and cut at the export's one score threshold, and scored by the same COCO
code as `tfod eval` (`coco_metrics` against the dataset's val_coco.json). The float checkpoint
the export came from runs the same way and is the reference for the AP drop and the speed-up.

Each TFLite model with metadata gets a second row from MediaPipe Tasks' ObjectDetector, as apps
run it (`tfod.export.mediapipe_runtime`); the ONNX model's row comes from ONNX Runtime.

For a QAT run (`tfod qat`) the reference is its float parent's checkpoint, followed by the
fake-quantized QAT checkpoint, the QAT int8 and the parent's post-training int8: the table shows
what each way to int8 costs against the same float model.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfod import atomic
from tfod.data.labelmap import read_label_map
from tfod.data.tfrecord import read_examples
from tfod.errors import TfodError
from tfod.evaluate.coco import coco_metrics
from tfod.export.exporter import EXPORT, EXPORT_JSON, read_manifest
from tfod.export.mediapipe_runtime import MediaPipeModel
from tfod.model.experiment import load_experiment
from tfod.predict.models import (
    DetectionModel,
    TFLiteModel,
    checkpoint_model,
    onnx_model,
    saved_model,
)
from tfod.runs.rundir import RunDir, float_parent, now

VERIFY_JSON = "verify.json"
MIN_TIMED_CALLS = 20  # latency is the median of at least this many batch-1 invocations
WARMUP_CALLS = 2


@dataclass(frozen=True)
class Verified:
    """One row of the verification table."""

    name: str
    bytes: int | None
    ap: float
    ap50: float
    latency_ms: float
    invoke_ms: float
    delta_ap: float = 0.0
    speedup: float = 1.0
    note: str = ""
    per_class: dict[str, float | None] = field(default_factory=dict)  # AP (None: no ground truth)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def per_class_delta_ap(rows: list[Verified]) -> dict[str, dict[str, float]]:
    """Each scored artefact's AP change per class against the first row (the float reference):
    a quantized model can lose a rare class while its mean AP barely moves."""
    reference = rows[0].per_class
    return {
        row.name: {
            name: round(ap - reference_ap, 4)
            for name, ap in row.per_class.items()
            if ap is not None and (reference_ap := reference.get(name)) is not None
        }
        for row in rows[1:]
        if row.per_class
    }


def validation_images(experiment: Any) -> list[tuple[int, np.ndarray]]:
    """(COCO image id, uint8 RGB image) for each validation example."""
    from PIL import Image

    pattern = Path(experiment.task.validation_data.input_path)
    shards = sorted(pattern.parent.glob(pattern.name))
    images = []
    for example in read_examples(shards):
        with Image.open(io.BytesIO(example.encoded)) as image:
            images.append((example.source_id, np.asarray(image.convert("RGB"))))
    if not images:
        raise TfodError("the validation split has no images to verify on", pattern.parent)
    return images


@dataclass(frozen=True)
class Measured:
    scores: dict[str, Any]  # coco_metrics
    latency_ms: float  # median detect(): preprocessing, invocation, mapping back
    invoke_ms: float  # median model invocation alone


def measure(
    model: DetectionModel,
    images: list[tuple[int, np.ndarray]],
    ground_truth: Path,
    threshold: float,
    on_image: Callable[[], None] | None = None,
) -> Measured:
    """Accuracy and batch-1 latency of `model` on `images`."""
    for _ in range(WARMUP_CALLS):
        model.detect(images[0][1])
    model.invoke_seconds.clear()
    model.latency_seconds.clear()
    results: list[dict[str, Any]] = []
    for image_id, image in images:
        results.extend(model.detect(image).above(threshold).coco(image_id))
        if on_image is not None:
            on_image()
    while len(model.invoke_seconds) < MIN_TIMED_CALLS:
        model.detect(images[len(model.invoke_seconds) % len(images)][1])
    return Measured(
        coco_metrics(ground_truth, results),
        statistics.median(model.latency_seconds) * 1000,
        statistics.median(model.invoke_seconds) * 1000,
    )


def verify(
    run: RunDir, on_model: Callable[[str, int], Callable[[], None]] | None = None
) -> tuple[list[Verified], int]:
    """Score the checkpoint and every artefact of RUN/export/; write verify.json.

    Args:
        run: a run with an export.
        on_model: called with (model name, image count); returns the per-image callback.

    Returns:
        (the rows: the checkpoint first, then each artefact; the number of images).
    """
    manifest = read_manifest(run.require())
    export_dir = run.path / EXPORT
    experiment = load_experiment(run)
    ground_truth = Path(experiment.task.annotation_file)
    labels = read_label_map(export_dir / manifest["label_map"])
    threshold = float(manifest["score_threshold"])
    prefix = Path(manifest["checkpoint"]["path"])
    if not Path(f"{prefix}.index").is_file():
        raise TfodError(
            "the checkpoint this export was made from is gone (kept checkpoints rotate); "
            "export again from a current one",
            prefix,
        )
    images = validation_images(experiment)

    def run_one(model: DetectionModel, size: int | None, note: str = "") -> Verified:
        tick = on_model(model.name, len(images)) if on_model else None
        got = measure(model, images, ground_truth, threshold, tick)
        metrics, per_class = got.scores["metrics"], got.scores["per_class"]
        if not rows:
            return Verified(
                model.name, size, metrics["AP"], metrics["AP50"], got.latency_ms, got.invoke_ms,
                note=note, per_class=per_class,
            )  # fmt: skip
        reference = rows[0]
        return Verified(
            model.name, size, metrics["AP"], metrics["AP50"], got.latency_ms, got.invoke_ms,
            metrics["AP"] - reference.ap, reference.latency_ms / got.latency_ms, note, per_class,
        )  # fmt: skip

    rows: list[Verified] = []
    parent = float_parent(run)
    if parent is not None:  # a QAT run: its float parent is the reference
        _, parent_prefix = parent.checkpoint("latest")
        name = f"float parent {parent_prefix.name}"
        floating = checkpoint_model(load_experiment(parent), parent_prefix, labels, name)
        rows.append(run_one(floating, None, "the float model QAT started from"))
    name = f"checkpoint {prefix.name}"
    note = "QAT, fake-quantized" if parent is not None else ""
    rows.append(run_one(checkpoint_model(experiment, prefix, labels, name), None, note))
    for artefact in manifest["artefacts"]:
        rows += _artefact_rows(artefact, export_dir / artefact["file"], labels, run_one, rows[0].ap)
    document = {
        "created": now(),
        "threshold": threshold,
        "images": len(images),
        "rows": [row.as_dict() for row in rows],
        "per_class_delta_ap": per_class_delta_ap(rows),
    }
    atomic.write_json(export_dir / VERIFY_JSON, document)
    manifest["verification"] = VERIFY_JSON
    manifest["per_class_delta_ap"] = document["per_class_delta_ap"]
    atomic.write_json(export_dir / EXPORT_JSON, manifest)
    return rows, len(images)


def _artefact_rows(
    artefact: dict[str, Any],
    path: Path,
    labels: dict[int, str],
    run_one: Callable[[DetectionModel, int | None, str], Verified],
    reference_ap: float,
) -> list[Verified]:
    """An artefact's row as tfod's own runtime scores it, and a TFLite model with metadata's row
    as MediaPipe Tasks scores it; an Edge TPU model's op split (it needs the TPU to run)."""
    size = artefact["bytes"]
    if artefact["quantization"] == "int8_edgetpu":
        nan = float("nan")
        split = f"{artefact.get('tpu_ops')} ops on the TPU, {artefact.get('cpu_ops')} on the CPU"
        note = f"{split}; needs an Edge TPU to run; its int8 source is verified above"
        return [Verified(artefact["file"], size, nan, nan, nan, nan, nan, nan, note)]
    rows = []
    try:
        if artefact["format"] == "saved_model":
            model: DetectionModel = saved_model(path, labels)
            note = _describe(artefact)
        elif artefact["format"] == "onnx":
            model = onnx_model(path, labels)
            note = f"ONNX Runtime, opset {artefact.get('opset')}"
        else:
            model = TFLiteModel(path, labels)
            note = _describe(artefact, model.delegate_problem)
        rows.append(run_one(model, size, note))
    except (TfodError, RuntimeError, ValueError) as err:  # a broken artefact scores 0
        rows.append(_failed(artefact["file"], size, err, reference_ap))
    if artefact["format"] == "tflite" and artefact.get("metadata"):
        try:
            with MediaPipeModel(path, labels) as tasks:
                rows.append(run_one(tasks, size, f"{artefact['metadata']}, as apps load it"))
        except TfodError as err:
            rows.append(_failed(f"{artefact['file']} · MediaPipe", size, err, reference_ap))
    return rows


def _failed(name: str, size: int, err: Exception, reference_ap: float) -> Verified:
    """The row of an artefact that does not run: AP 0, and why."""
    nan = float("nan")
    note = f"fails to run: {str(err).splitlines()[0][:160]}"
    return Verified(name, size, 0.0, 0.0, nan, nan, -reference_ap, nan, note)


def _describe(artefact: dict[str, Any], delegate_problem: str = "") -> str:
    """The verification table's note for an artefact: how it was quantized, from what, and (a
    TFLite model) why it ran without XNNPACK, if it did."""
    parts = [str(artefact[key]) for key in ("source", "method") if artefact.get(key)]
    dtype = artefact.get("input", {}).get("dtype", "float32")
    if artefact.get("format") == "tflite" and dtype != "float32":
        parts.append(f"{dtype} input")
    if delegate_problem:
        parts.append(f"{delegate_problem}: scored and timed on LiteRT's reference kernels")
    return ", ".join(parts)


def check_ap_drop(rows: list[Verified], max_ap_drop: float) -> None:
    """A TfodError naming every artefact that lost more than `max_ap_drop` AP, with the fixes."""
    reference = rows[0]
    worse = [r for r in rows[1:] if not np.isnan(r.delta_ap) and -r.delta_ap > max_ap_drop]
    if not worse:
        return
    lost = "; ".join(
        f"{r.name} {reference.ap:.3f} -> {r.ap:.3f} AP ({r.delta_ap:+.3f})" for r in worse
    )
    raise TfodError(
        f"AP dropped by more than --max-ap-drop {max_ap_drop}: {lost}. Options: ship the fp16 "
        "model (half the size, float accuracy); calibrate int8 on more training images "
        "(--calibration-images, the default is 200); or train with quantization-aware training, "
        "`tfod qat RUN` then `tfod export RUN-qat` (Model Garden's QAT kept 21.7 AP where "
        "post-training int8 fell to 0.04)."
    )
