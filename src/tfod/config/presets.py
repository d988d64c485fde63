"""Presets: named detectors mapped onto Model Garden's registered experiments, adapted for CPU/GPU.

Each preset names a registered experiment and what tfod changes on top of it: the input size and
pyramid levels, the model parts (Model Garden registers no MobileNetV2 RetinaNet, so those presets
put a MobileNetV2 backbone and a separable FPN on `retinanet_mobile_coco`), and the learning rate
the experiment was tuned with at its reference batch (scaled linearly to the user's batch). The
TPU settings (bfloat16, sync BN, batch 256) are replaced in `tfod.config.experiment`.

Every preset has a "-smoke" twin: the same architecture family, tiny, for tests and CI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tfod.errors import TfodError

SMOKE_SUFFIX = "-smoke"


@dataclass(frozen=True)
class Preset:
    """A detector recipe.

    Args:
        name: the name users write in tfod.yaml.
        experiment: the Model Garden experiment it starts from.
        description: one line for `tfod init` and `tfod config presets`.
        input_size: square input side in pixels (a multiple of 2**max_level).
        min_level: finest pyramid level.
        max_level: coarsest pyramid level.
        model: overrides under `task.model` (backbone, decoder, head, anchors).
        reference_batch: the global batch `base_learning_rate` was tuned for.
        base_learning_rate: the experiment's peak learning rate at `reference_batch`.
        warmup_steps: the experiment's linear warmup, capped for short runs.
        batch_size: the default global batch.
        steps: the default number of training steps.
        qat: Model Garden's quantization-aware training builds this architecture (`tfod qat`).
        summed_loss: the task's loss is summed over the batch's images, not averaged (YOLO's, as
            in YOLO's own code): its gradient grows with the batch already, so its learning rate
            does not (`base_learning_rate` at any batch).
        family: the detector family: "retinanet" (one stage, Model Garden's `retinanet` task),
            "fasterrcnn" (two stages, its `maskrcnn` task without masks), "maskrcnn" (the same
            with a mask head: instance segmentation, trained on a dataset with masks) or "yolo"
            (one stage, anchor boxes of its own, Model Garden's `official/projects/yolo` YOLOv7).
    """

    name: str
    experiment: str
    description: str
    input_size: int
    min_level: int
    max_level: int
    model: dict[str, Any] = field(default_factory=dict)
    reference_batch: int = 256
    base_learning_rate: float = 0.32
    warmup_steps: int = 2000
    batch_size: int = 8
    steps: int = 20000
    qat: bool = False
    summed_loss: bool = False
    family: str = "retinanet"


QAT_EXPERIMENT = "retinanet_mobile_coco_qat"
"""Model Garden's registered QAT RetinaNet experiment; a `tfod qat` run is built on it."""

SPINENET_QAT_OVERRIDE = {
    "task": {"model": {"backbone": {"spinenet_mobile": {"use_keras_upsampling_2d": True}}}}
}
"""SpineNet-Mobile's QAT needs Keras UpSampling2D layers, which change the checkpoint's layout: the
float run must be trained with them (Model Garden's published SpineNet checkpoint has none)."""


def _mobilenetv2(
    width: float = 1.0, filters: int = 128, convs: int = 4, published: bool = False
) -> dict[str, Any]:
    """MobileNetV2 + separable FPN + separable head. `published`: exactly the layout of Model
    Garden's published COCO checkpoint (Keras-layer FPN, batch-norm epsilon 0.001, anchor size 3),
    from `official/projects/qat/vision/configs/experiments/retinanet/coco_mobilenetv2_qat_tpu_e2e.yaml`."""
    model: dict[str, Any] = {
        "backbone": {
            "type": "mobilenet",
            "mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": width},
        },
        "decoder": {"type": "fpn", "fpn": {"num_filters": filters, "use_separable_conv": True}},
        "head": {"num_filters": filters, "num_convs": convs, "use_separable_conv": True},
        "norm_activation": {"activation": "relu6"},
    }
    if published:
        model["decoder"]["fpn"]["use_keras_layer"] = True
        model["norm_activation"]["norm_epsilon"] = 0.001
        model["anchor"] = {"num_scales": 3, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 3}
    return model


def _two_stage(family: str, experiment: str, description: str) -> Preset:
    """A two-stage preset, FAMILY-resnet50-fpn-640, with Model Garden's recipe's batch and rate."""
    return Preset(
        f"{family}-resnet50-fpn-640", experiment, description,
        input_size=640, min_level=2, max_level=6,
        reference_batch=64, base_learning_rate=0.12, warmup_steps=500, family=family,
    )  # fmt: skip


def _two_stage_smoke(family: str, experiment: str, **model: dict[str, Any]) -> Preset:
    """The tiny (ResNet-18) twin of `_two_stage(family, ...)`, with `model` settings added."""
    real = _two_stage(family, experiment, "")
    return dataclasses.replace(
        real,
        name=real.name + SMOKE_SUFFIX,
        description=f"tiny twin of {real.name} (ResNet-18) for tests",
        input_size=64,
        max_level=4,
        model={
            "backbone": {"type": "resnet", "resnet": {"model_id": 18}},
            "decoder": {"type": "fpn", "fpn": {"num_filters": 16}},
            "rpn_head": {"num_filters": 16},
            "detection_head": {"num_convs": 0, "num_filters": 16, "fc_dims": 32},
            "roi_generator": {"num_proposals": 64, "test_num_proposals": 64},
            "roi_sampler": {"num_sampled_rois": 32},
            **model,
        },
        batch_size=2,
        steps=4,
    )


YOLOV7_TINY_SIZE = 416
"""The input size Model Garden's YOLOv7-tiny recipe (`coco_yolov7tiny`) fitted its anchors to."""


def _yolov7(model_id: str) -> dict[str, Any]:
    """Model Garden's YOLOv7 backbone and decoder of size `model_id` (yolov7-tiny, -nano, -pico)."""
    return {
        "backbone": {"yolov7": {"model_id": model_id}},
        "decoder": {"yolov7": {"model_id": model_id}},
    }


_REAL = [
    Preset(
        "retinanet-mobilenetv2-256",
        "retinanet_mobile_coco",
        "MobileNetV2 + separable FPN RetinaNet, 256 px: phones and Edge TPU, CPU-trainable",
        input_size=256,
        min_level=3,
        max_level=6,
        model=_mobilenetv2(),
    ),
    Preset(
        "retinanet-mobilenetv2-320",
        "retinanet_mobile_coco",
        "MobileNetV2 + separable FPN RetinaNet, 320 px: phones, a little more accurate",
        input_size=320,
        min_level=3,
        max_level=6,
        model=_mobilenetv2(),
    ),
    Preset(
        "retinanet-mobilenetv2-ssd-256",
        "retinanet_mobile_coco",
        "MobileNetV2 RetinaNet, 256 px, levels 3-7: the layout of Model Garden's COCO checkpoint "
        "(zoo: retinanet-mobilenetv2-256-coco)",
        input_size=256,
        min_level=3,
        max_level=7,
        model=_mobilenetv2(published=True),
        qat=True,
    ),
    Preset(
        "retinanet-spinenet49-mobile-384",
        "retinanet_mobile_coco",
        "SpineNet-Mobile-49 RetinaNet, 384 px (Model Garden's mobile detector as registered)",
        input_size=384,
        min_level=3,
        max_level=7,
        model={"backbone": {"spinenet_mobile": {"stochastic_depth_drop_rate": 0.0}}},
        qat=True,
    ),
    Preset(
        "retinanet-resnet50-fpn-640",
        "retinanet_resnetfpn_coco",
        "ResNet-50 FPN RetinaNet, 640 px: servers and GPUs",
        input_size=640,
        min_level=3,
        max_level=7,
        warmup_steps=500,
    ),
    _two_stage(
        "fasterrcnn",
        "fasterrcnn_resnetfpn_coco",
        "ResNet-50 FPN Faster R-CNN, 640 px: two stages, for accuracy on servers and GPUs",
    ),
    _two_stage(
        "maskrcnn",
        "maskrcnn_resnetfpn_coco",
        "ResNet-50 FPN Mask R-CNN, 640 px: boxes and instance masks, on servers and GPUs",
    ),
    Preset(
        "yolov7-tiny-416",
        "coco_yolov7tiny",
        "YOLOv7-tiny, 416 px: a fast one-stage detector with anchors of its own, phones and CPUs",
        input_size=YOLOV7_TINY_SIZE,
        min_level=3,
        max_level=5,
        model=_yolov7("yolov7-tiny"),
        base_learning_rate=0.01,
        warmup_steps=500,
        summed_loss=True,
        family="yolo",
    ),
]

_SMOKE = [
    Preset(
        "retinanet-mobilenetv2-256" + SMOKE_SUFFIX, "retinanet_mobile_coco",
        "tiny twin of retinanet-mobilenetv2-256 for tests",
        input_size=64, min_level=3, max_level=5, model=_mobilenetv2(0.35, 16, 1),
        batch_size=4, steps=4,
    ),
    Preset(
        "retinanet-mobilenetv2-320" + SMOKE_SUFFIX, "retinanet_mobile_coco",
        "tiny twin of retinanet-mobilenetv2-320 for tests",
        input_size=96, min_level=3, max_level=5, model=_mobilenetv2(0.35, 16, 1),
        batch_size=4, steps=4,
    ),
    Preset(
        "retinanet-mobilenetv2-ssd-256" + SMOKE_SUFFIX, "retinanet_mobile_coco",
        "tiny twin of retinanet-mobilenetv2-ssd-256 for tests",
        input_size=128, min_level=3, max_level=7, model=_mobilenetv2(0.35, 16, 1, published=True),
        batch_size=4, steps=4, qat=True,
    ),
    Preset(
        "retinanet-spinenet49-mobile-384" + SMOKE_SUFFIX, "retinanet_mobile_coco",
        "tiny twin of retinanet-spinenet49-mobile-384 for tests",
        input_size=128, min_level=3, max_level=7,
        model={
            "backbone": {"spinenet_mobile": {"model_id": "49XS", "stochastic_depth_drop_rate": 0.0}},
            "head": {"num_filters": 16, "num_convs": 1},
        },
        batch_size=2, steps=4, qat=True,
    ),
    Preset(
        "retinanet-resnet50-fpn-640" + SMOKE_SUFFIX, "retinanet_resnetfpn_coco",
        "tiny twin of retinanet-resnet50-fpn-640 (ResNet-18) for tests",
        input_size=64, min_level=3, max_level=5,
        model={
            "backbone": {"type": "resnet", "resnet": {"model_id": 18}},
            "decoder": {"type": "fpn", "fpn": {"num_filters": 16}},
            "head": {"num_filters": 16, "num_convs": 1},
        },
        warmup_steps=500, batch_size=2, steps=4,
    ),
    _two_stage_smoke("fasterrcnn", "fasterrcnn_resnetfpn_coco"),
    _two_stage_smoke(
        "maskrcnn", "maskrcnn_resnetfpn_coco",
        mask_head={"num_convs": 1, "num_filters": 16}, mask_sampler={"num_sampled_masks": 16},
    ),
    Preset(
        "yolov7-tiny-416" + SMOKE_SUFFIX, "coco_yolov7tiny",
        "tiny twin of yolov7-tiny-416 (YOLOv7-pico) for tests",
        input_size=64, min_level=3, max_level=5, model=_yolov7("yolov7-pico"),
        base_learning_rate=0.01, warmup_steps=500, batch_size=2, steps=4, summed_loss=True,
        family="yolo",
    ),
]  # fmt: skip

PRESETS: dict[str, Preset] = {p.name: p for p in [*_REAL, *_SMOKE]}


def qat_presets() -> list[str]:
    """The real presets `tfod qat` supports."""
    return [p.name for p in _REAL if p.qat]


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a TfodError listing the real ones."""
    try:
        return PRESETS[name]
    except KeyError:
        real = ", ".join(p.name for p in _REAL)
        raise TfodError(
            f"unknown preset {name!r}; choose one of {real} (or a '{SMOKE_SUFFIX}' twin)",
            "model.preset",
        ) from None
