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


@functools.cache
def _qat_detection_module() -> type:
    """Model Garden's QAT detection serving module, its model built as the QAT task builds it."""
    from official.projects.qat.vision.serving import export_module
    from official.vision.serving import detection

    class QatDetectionModule(export_module.DetectionModule):  # type: ignore[misc]
        def _build_model(self) -> Any:
            return quantize(detection.DetectionModule._build_model(self), self.params.task)

    return QatDetectionModule
