"""COCO evaluation: a model's detections on the validation split, scored by pycocotools.

Detections come from Model Garden's own validation input pipeline and model call (boxes mapped
back to original-image pixels with the parser's `image_info`), and are scored against the
dataset's `val_coco.json` — never against ground truth rebuilt from TFRecords, whose Model Garden
path crashes under NumPy 2.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tfod.data.masks import encode_rle, paste

RECALL_POINTS = 101  # COCOeval's recall thresholds 0.00, 0.01, ..., 1.00
METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
)  # fmt: skip
MASK_METRIC_NAMES = tuple(f"mask_{name}" for name in METRIC_NAMES[:6])  # mask_AP ... mask_APl


class Detector:
    """Runs a Model Garden detection model over the validation split of its experiment."""

    def __init__(self, task: Any, experiment: Any, model: Any) -> None:
        import tensorflow as tf

        from tfod.model.serving import is_yolo, yolo_boxes

        self._task = task
        self._experiment = experiment
        self._model = model

        @tf.function  # type: ignore[untyped-decorator]
        def infer_yolo(images: Any, labels: Any) -> dict[str, Any]:
            outputs = model(images, training=False)
            truth = labels["groundtruths"]
            return {
                "boxes": yolo_boxes(outputs["bbox"], truth["image_info"]),
                "scores": outputs["confidence"],
                "classes": outputs["classes"],
                "count": outputs["num_detections"],
                "source_id": truth["source_id"],
                "image_info": truth["image_info"],
            }

        @tf.function  # type: ignore[untyped-decorator]
        def infer(features: Any, labels: Any) -> dict[str, Any]:
            outputs = model(
                features,
                anchor_boxes=labels["anchor_boxes"],
                image_shape=labels["image_info"][:, 1, :],
                training=False,
            )
            masks = {"masks": outputs["detection_masks"]} if "detection_masks" in outputs else {}
            return {
                "boxes": outputs["detection_boxes"],
                "scores": outputs["detection_scores"],
                "classes": outputs["detection_classes"],
                "count": outputs["num_detections"],
                "source_id": labels["groundtruths"]["source_id"],
                "image_info": labels["image_info"],
                **masks,
            }

        self._infer = infer_yolo if is_yolo(experiment) else infer

    def detect(self, on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """COCO results ([x, y, w, h] in original pixels, and for a Mask R-CNN each box's mask as
        COCO RLE of the original image) for every validation image."""
        dataset = self._task.build_inputs(self._experiment.task.validation_data)
        results: list[dict[str, Any]] = []
        for features, labels in dataset:
            out = {k: v.numpy() for k, v in self._infer(features, labels).items()}
            for i in range(out["boxes"].shape[0]):
                results.extend(_image_results(out, i))
            if on_batch is not None:
                on_batch(out["boxes"].shape[0])
        return results

    def seconds_per_image(self, batches: int = 2) -> float:
        """The steady cost of detection per validation image, timed on the first `batches`
        batches (after the first evaluation has traced the model)."""
        import time

        dataset = self._task.build_inputs(self._experiment.task.validation_data)
        images, started = 0, time.perf_counter()
        for features, labels in dataset.take(batches):
            out = self._infer(features, labels)
            images += int(out["count"].shape[0])
        return (time.perf_counter() - started) / max(1, images)


def _image_results(out: dict[str, np.ndarray], i: int) -> list[dict[str, Any]]:
    """The COCO results of the batch's `i`-th image."""
    scale = out["image_info"][i, 2, :]  # (y, x) resize factor of the parser
    n = int(out["count"][i])
    ymin, xmin, ymax, xmax = (out["boxes"][i, :n] / np.tile(scale, 2)).T
    xywh = np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=1)
    image_id = int(out["source_id"][i])
    results = [
        {
            "image_id": image_id,
            "category_id": int(cls),
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        for box, score, cls in zip(xywh, out["scores"][i, :n], out["classes"][i, :n], strict=True)
        if cls >= 1  # a YOLO's unused class 0, which only an untrained model reports
    ]
    if "masks" in out:
        height, width = (int(v) for v in out["image_info"][i, 0])
        pasted = paste(out["masks"][i, :n], xywh, height, width)
        for result, pixels in zip(results, pasted, strict=True):
            result["segmentation"] = encode_rle(pixels)
    return results


def coco_metrics(ground_truth: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """COCO box metrics and per-class AP of `results` against the COCO JSON `ground_truth`; mask
    metrics too where the results carry masks (a Mask R-CNN's).

    Returns:
        {"metrics": {AP, AP50, ..., ARl[, mask_AP, ..., mask_APl]}, "per_class": {class name: AP (None: no ground truth)},
        "pr": {class name: precision at 101 recall points, IoU 0.5 (None: no ground truth)}}.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(ground_truth))
        names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
        if not results or not gt.getAnnIds():
            empty = -1.0 if not gt.getAnnIds() else 0.0
            has_truth = {name: bool(gt.getAnnIds(catIds=[cid])) for cid, name in names.items()}
            return {
                "metrics": dict.fromkeys(METRIC_NAMES, empty),
                "per_class": {n: (0.0 if t else None) for n, t in has_truth.items()},
                "pr": {n: ([0.0] * RECALL_POINTS if t else None) for n, t in has_truth.items()},
            }
        with_masks = "segmentation" in results[0]  # before loadRes gives boxes box outlines
        dt = gt.loadRes([dict(r) for r in in_canonical_order(results)])  # loadRes adds keys
        evaluation = _evaluated(COCOeval(gt, dt, iouType="bbox"))
        metrics = {
            name: float(value) for name, value in zip(METRIC_NAMES, evaluation.stats, strict=True)
        }
        if with_masks:
            masks = _evaluated(COCOeval(gt, dt, iouType="segm"))
            metrics.update(zip(MASK_METRIC_NAMES, (float(v) for v in masks.stats), strict=False))
    # precision: [IoU thresholds, recall points, classes, area ranges, max detections]
    precision = evaluation.eval["precision"]
    per_class: dict[str, float | None] = {}
    pr: dict[str, list[float] | None] = {}
    for k, cid in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[names[cid]] = float(values.mean()) if values.size else None
        at_50 = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
        pr[names[cid]] = [max(0.0, float(v)) for v in at_50] if (at_50 > -1).any() else None
    return {"metrics": metrics, "per_class": per_class, "pr": pr}


def in_canonical_order(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`results` in an order that does not depend on the runtime's: pycocotools ranks equal
    scores in the order it was given them, and a quantized model's scores (whole 256ths) tie
    often, so two runtimes returning the same detections in another order would score
    differently. Saved in this order, a results file scores in pycocotools as tfod scored it."""
    return sorted(results, key=lambda r: (r["image_id"], r["category_id"], -r["score"], r["bbox"]))


def _evaluated(evaluation: Any) -> Any:
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation
