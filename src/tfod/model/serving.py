"""Model Garden's detection serving modules holding a run's weights: what the SavedModel, TFLite
and ONNX exports are made from, and what `tfod predict` runs a checkpoint with."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from tfod.model.quantize import is_qat, quantize
from tfod.model.weights import read_weights


def serving_module(experiment: Any, input_type: str, prefix: Path) -> Any:
    """Model Garden's detection serving module for `experiment` (its QAT twin for a QAT run)
    holding the weights of checkpoint `prefix` (their moving averages if trained: train.ema)."""
    from official.vision.serving import detection

    if is_yolo(experiment):
        served = _yolo_module(experiment, input_type)
        read_weights(served.model, prefix, experiment)
        return served
    module = _qat_detection_module() if is_qat(experiment.task) else detection.DetectionModule
    if experiment.task.model.detection_generator.nms_version != "v2" and is_two_stage(experiment):
        # A box per class: tf2onnx converts Model Garden's own NMS (v2) of those, but neither
        # TensorFlow's combined NMS (`batched`, what evaluation runs) nor v1.
        experiment = copy.deepcopy(experiment)
        experiment.task.model.detection_generator.nms_version = "v2"
    size = [int(s) for s in experiment.task.model.input_size[:2]]
    served = module(experiment, batch_size=1, input_image_size=size, input_type=input_type)
    read_weights(served.model, prefix, experiment)
    return served


def is_two_stage(experiment: Any) -> bool:
    """A Faster R-CNN (Model Garden's `maskrcnn` task), not a RetinaNet."""
    from official.vision.configs import maskrcnn

    return isinstance(experiment.task.model, maskrcnn.MaskRCNN)


def detection_limits(experiment: Any) -> tuple[float, int]:
    """The score below which the model returns no detection, and the most it returns."""
    detection = experiment.task.model.detection_generator
    if is_yolo(experiment):  # YOLO's `iou_thresh` is its score threshold
        return float(detection.iou_thresh), int(detection.max_boxes)
    return float(detection.pre_nms_score_threshold), int(detection.max_num_detections)


def is_yolo(experiment: Any) -> bool:
    """A YOLOv7 (Model Garden's `official/projects/yolo`)."""
    from official.projects.yolo.configs import yolov7

    return isinstance(experiment.task, yolov7.YoloV7Task)


def yolo_boxes(boxes: Any, image_info: Any) -> Any:
    """A YOLO model's boxes (normalised to its letterboxed input) in the pixels of the resized,
    unpadded image, as Model Garden's other detectors return them: divided by `image_info`'s
    scale row they are in the original image's pixels. `image_info` is YOLO's [original size,
    input size, scale, offset] per image (its parser's and serving letterbox's)."""
    import tensorflow as tf
    from official.vision.ops import box_ops

    size = image_info[:, 1:2, :]
    boxes = box_ops.clip_boxes(box_ops.denormalize_boxes(boxes, size), size)
    return boxes + tf.tile(image_info[:, 3:4, :], [1, 1, 2])


def _yolo_module(experiment: Any, input_type: str) -> Any:
    """Model Garden's YOLO serving module (its letterbox, its model) answering as the detection
    module does: boxes in the resized image's pixels and `image_info` beside them; for TFLite
    (input: RGB pixels 0..255, which the module divides by 255) through TFLite's detection
    post-processing op, as tfod's other TFLite models (`yolo_tflite_detections`)."""
    from official.projects.yolo.serving import export_module_factory

    size = [int(s) for s in experiment.task.model.input_size[:2]]
    served = export_module_factory.create_yolo_export_module(
        experiment, input_type, batch_size=1, input_image_size=size
    )

    def inference_step(inputs: Any, model: Any) -> dict[str, Any]:
        images, image_info = inputs
        if input_type == "tflite":
            return yolo_tflite_detections(model, images, experiment)
        outputs = model.call(images, training=False)
        return {
            "detection_boxes": yolo_boxes(outputs["bbox"], image_info),
            "detection_scores": outputs["confidence"],
            "detection_classes": outputs["classes"],
            "num_detections": outputs["num_detections"],
            "image_info": image_info,
        }

    served.inference_step = functools.partial(inference_step, model=served.model)
    return served


YOLO_MIN_SIDE = 1 / 16
"""Of its anchor: the smallest box side the YOLO TFLite model encodes (the encodings' range sets
the int8 model's step: log(1/16) .. log(4), YOLO's widest box, keeps it near 0.02 anchors)."""


def yolo_tflite_detections(model: Any, images: Any, experiment: Any) -> dict[str, Any]:
    """A YOLO model's decoded boxes and class scores for `images` through TFLite's detection
    post-processing op (instead of its own NMS), which MediaPipe Tasks and Model Garden's other
    TFLite models use.

    The op decodes centre-size offsets from anchors; here each prediction's anchor is its own grid
    cell's centre and anchor box, and its offsets are those of YOLO's decoded box, so the op gives
    the box back (normalised to the input), and the offsets stay in a small range for int8. The
    class scores are YOLO's (class probability x objectness) without class 0, which tfod's ids never
    use: the op's class 0 is label 1, as in tfod's other TFLite models."""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    raw = model.head(model.decoder(model.backbone(images)))
    levels = sorted(raw, key=int)
    parsed = [model.detection_generator.parse_prediction_path(k, raw[k]) for k in levels]
    boxes = tf.concat([box for _, box, _ in parsed], 1)  # [1, N, 4] ymin, xmin, ymax, xmax (0..1)
    classes = tf.concat([score for _, _, score in parsed], 1)  # class x objectness [1, N, C]
    anchors = tf.constant(_yolo_prediction_anchors(experiment))  # [N, 4]: yc, xc, h, w
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    side = tf.maximum(boxes[..., 2:] - boxes[..., :2], anchors[:, 2:] * YOLO_MIN_SIDE)
    encoded = tf.concat(
        [(centre - anchors[:, :2]) / anchors[:, 2:], tf.math.log(side / anchors[:, 2:])], axis=-1
    )
    scores = classes[:, :, 1:]
    score_threshold, max_detections = detection_limits(experiment)
    config = {
        "max_detections": max_detections,
        "max_classes_per_detection": 1,
        "detections_per_class": max_detections,
        "use_regular_nms": True,  # per class, as the SavedModel's NMS
        "nms_score_threshold": score_threshold,
        "nms_iou_threshold": float(experiment.task.model.detection_generator.nms_thresh),
        "num_classes": int(scores.shape[-1]),
    }
    signature = detection_generator._generate_detections_tflite_implements_signature(config)

    # TFLite's converter replaces this function by the op (Model Garden's own placeholder).
    @tf.function(experimental_implements=signature)  # type: ignore[untyped-decorator]
    def post_processing(input_boxes: Any, input_scores: Any, input_anchors: Any) -> Any:
        del input_boxes, input_scores, input_anchors
        return tuple(
            tf.constant(0.0, tf.float32, name=n)
            for n in ("boxes", "classes", "scores", "num_detections")
        )

    boxes, classes, scores, count = post_processing(encoded, scores, anchors)
    return {
        "detection_boxes": boxes,
        "detection_classes": classes,
        "detection_scores": scores,
        "num_detections": count,
    }


def _yolo_prediction_anchors(experiment: Any) -> Any:
    """[N, 4] numpy (y centre, x centre, height, width), normalised to the input: each of the YOLO
    model's predictions' grid cell centre and anchor box, in the order its detection generator
    flattens them (level, row, column, anchor)."""
    import numpy as np

    model = experiment.task.model
    height, width = (int(s) for s in model.input_size[:2])
    per_level, _ = model.anchor_boxes.get(model.min_level, model.max_level)
    rows = []
    for level in range(model.min_level, model.max_level + 1):
        cells_y, cells_x = height // 2**level, width // 2**level
        boxes = np.asarray(per_level[str(level)], np.float32)  # width, height in pixels
        grid = np.meshgrid(
            np.arange(cells_y), np.arange(cells_x), np.arange(len(boxes)), indexing="ij"
        )
        y, x, a = (axis.ravel() for axis in grid)
        centre = [(y + 0.5) / cells_y, (x + 0.5) / cells_x]
        rows.append(np.stack([*centre, boxes[a, 1] / height, boxes[a, 0] / width], axis=1))
    return np.concatenate(rows).astype(np.float32)


@functools.cache
def _qat_detection_module() -> type:
    """Model Garden's QAT detection serving module, its model built as the QAT task builds it."""
    from official.projects.qat.vision.serving import export_module
    from official.vision.serving import detection

    class QatDetectionModule(export_module.DetectionModule):  # type: ignore[misc]
        def _build_model(self) -> Any:
            return quantize(detection.DetectionModule._build_model(self), self.params.task)

    return QatDetectionModule
