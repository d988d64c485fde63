"""A pipeline.config's `model` section -> a tfod preset and its Model Garden overrides."""

from __future__ import annotations

import math
import re
from typing import Any

from tfod.config.experiment import merge
from tfod.config.presets import SPINENET_QAT_OVERRIDE, Preset, get_preset, qat_presets
from tfod.odapi.mapper import APPROXIMATED, MAPPED, UNSUPPORTED, Mapper, Row

# Preset families: the API's feature extractors -> tfod presets (nearest input size wins).
MOBILE = ("retinanet-mobilenetv2-256", "retinanet-mobilenetv2-320", "retinanet-mobilenetv2-ssd-256")


RESNET = ("retinanet-resnet50-fpn-640",)


SPINENET = ("retinanet-spinenet49-mobile-384",)


TWO_STAGE = ("fasterrcnn-resnet50-fpn-640",)


MASKS = ("maskrcnn-resnet50-fpn-640",)  # a Faster R-CNN config that predicts instance masks


def map_model(mapper: Mapper, chosen: str | None, classes: int | None) -> None:
    config = mapper.config
    kind = config.model.WhichOneof("model")
    qat = config.HasField("graph_rewriter") and config.graph_rewriter.HasField("quantization")
    fine_tune = bool(config.train_config.fine_tune_checkpoint)
    if kind == "ssd":
        model = config.model.ssd
        extractor = model.feature_extractor.type
        family = _family(extractor)
    elif kind == "faster_rcnn":
        model = config.model.faster_rcnn
        extractor = model.feature_extractor.type
        predictor = model.second_stage_box_predictor.mask_rcnn_box_predictor
        family = MASKS if predictor.predict_instance_masks else TWO_STAGE
    else:
        model, extractor, family = None, "", MOBILE
    size = _input_size(model) if model is not None else None
    preset_name = chosen or _nearest(family, size, qat, fine_tune)
    preset = get_preset(preset_name)
    given = f" (--preset {chosen})" if chosen else ""
    source = f"model.{kind} {extractor}".strip() if kind else "no model in the file"
    mapper.set("model", "preset", preset.name, f"from {source}{given}")

    prefix = f"model.{kind}"
    if kind in ("center_net", "experimental_model"):
        what = "CenterNet" if kind == "center_net" else "this model"
        why = (
            f"not supported: tfod trains RetinaNets and Faster R-CNNs; {what} cannot be imported. "
            f"The nearest tfod preset is {preset.name}{given}: {preset.description}. The "
            "tfod.yaml uses it."
        )
        mapper.claim(
            f"{prefix}.feature_extractor.type", UNSUPPORTED, f"model.preset: {preset.name}", why
        )
    elif kind == "faster_rcnn":
        _map_faster_rcnn(mapper, preset, extractor, chosen)
    elif kind == "ssd":
        _map_ssd(mapper, preset, family, extractor, chosen, qat, fine_tune)
    if model is not None:
        _map_num_classes(mapper, f"{prefix}.num_classes", model.num_classes, classes)
        _map_resizer(mapper, f"{prefix}.image_resizer", model.image_resizer, size, preset)
    if kind not in ("ssd", "faster_rcnn"):
        mapper.claim(
            prefix, UNSUPPORTED, "", "part of a model tfod does not train (see the model row)"
        )
    if qat and preset.name.startswith(SPINENET[0]):
        mapper.overrides = merge(mapper.overrides, SPINENET_QAT_OVERRIDE)


def _map_ssd(
    mapper: Mapper,
    preset: Preset,
    family: tuple[str, ...],
    extractor: str,
    chosen: str | None,
    qat: bool,
    fine_tune: bool,
) -> None:
    """An SSD (or EfficientDet) model's feature extractor, backbone, pyramid and anchors."""
    prefix = "model.ssd"
    given = f" (--preset {chosen})" if chosen else ""
    status = MAPPED if family != SPINENET and (chosen is None or chosen in family) else APPROXIMATED
    why = {
        MOBILE: "MobileNet SSD -> the MobileNetV2 RetinaNet presets",
        RESNET: "ResNet SSD/RetinaNet -> the ResNet-50 FPN RetinaNet",
        SPINENET: "EfficientDet's BiFPN has no Model Garden RetinaNet equivalent: SpineNet-49 "
        "Mobile is the nearest in size and cost (a learned multi-scale network too)",
    }[family]
    if "mobilenet_v1" in extractor or "mobilenet_v3" in extractor:
        status, why = APPROXIMATED, why + " (MobileNetV2 stands in for this MobileNet)"
    if "fpn" not in extractor and family == MOBILE:
        status, why = APPROXIMATED, why + " (every tfod preset has a feature pyramid)"
    mapper.claim(
        f"{prefix}.feature_extractor.type",
        status,
        f"model.preset: {preset.name}{given}",
        why + _preset_reasons(preset.name, qat, fine_tune, chosen),
    )
    _map_backbone(mapper, prefix, extractor)
    _map_levels(mapper, f"{prefix}.feature_extractor.fpn", preset)
    _map_levels(mapper, f"{prefix}.feature_extractor.bifpn", preset)
    mapper.claim(
        f"{prefix}.feature_extractor.use_depthwise",
        MAPPED if family == MOBILE else APPROXIMATED,
        "",
        "the preset's separable convolutions" if family == MOBILE else "the preset's convolutions",
    )
    mapper.claim(
        f"{prefix}.feature_extractor.min_depth", APPROXIMATED, "", "MobileNetV2's own minimum"
    )
    _map_anchors(mapper, f"{prefix}.anchor_generator", preset)


def _map_faster_rcnn(mapper: Mapper, preset: Preset, extractor: str, chosen: str | None) -> None:
    """A Faster R-CNN: Model Garden's ResNet-50 FPN Faster R-CNN, its Mask R-CNN where the config
    predicts instance masks. The two stages' and the mask head's own settings are Model
    Garden's (the mapper's NOT_MODELLED rows say so)."""
    masks = "model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor"
    predicted = mapper.config.model.faster_rcnn.second_stage_box_predictor
    with_masks = predicted.mask_rcnn_box_predictor.predict_instance_masks
    family, what = (MASKS, "Mask R-CNN") if with_masks else (TWO_STAGE, "Faster R-CNN")
    notes = []
    if "resnet50" not in extractor:
        notes.append("ResNet-50 stands in for this feature extractor")
    if "fpn" not in extractor:
        notes.append(f"Model Garden's {what} has a feature pyramid")
    if chosen is not None and chosen not in family:
        notes.append(f"--preset {chosen} is not a {what}")
    given = f" (--preset {chosen})" if chosen else ""
    mapper.claim(
        "model.faster_rcnn.feature_extractor.type",
        APPROXIMATED if notes else MAPPED,
        f"model.preset: {preset.name}{given}",
        "; ".join([f"{what} -> Model Garden's {what} (`maskrcnn` task)", *notes]),
    )
    if with_masks:
        mapper.claim(
            f"{masks}.predict_instance_masks",
            MAPPED if preset.family == "maskrcnn" else UNSUPPORTED,
            f"model.preset: {preset.name}",
            "instance masks, learnt from the records' image/object/mask"
            if preset.family == "maskrcnn"
            else f"{preset.name} trains boxes alone",
        )
    mapper.claim(masks, MAPPED, "", f"as tfod's {what}")


def _family(extractor: str) -> tuple[str, ...]:
    if "efficientnet" in extractor or "bifpn" in extractor:
        return SPINENET
    if "resnet" in extractor or "inception" in extractor or "nas" in extractor:
        return RESNET
    return MOBILE


def _nearest(family: tuple[str, ...], size: int | None, qat: bool, fine_tune: bool) -> str:
    from tfod.zoo.catalog import ZOO

    candidates = list(family)
    coco_trained = {e.preset for e in ZOO.values() if e.restores == "detector"}
    for wanted in (
        [p for p in candidates if p in qat_presets()] if qat else candidates,
        [p for p in candidates if p in coco_trained] if fine_tune else None,
    ):
        if wanted:
            candidates = wanted
    if size is None:
        return candidates[0]
    return min(candidates, key=lambda p: abs(get_preset(p).input_size - size))


def _preset_reasons(name: str, qat: bool, fine_tune: bool, chosen: str | None) -> str:
    if chosen:
        return ""
    reasons = []
    if qat and name in qat_presets():
        reasons.append("quantization-aware training needs a preset `tfod qat` supports")
    if fine_tune:
        reasons.append("it has a COCO-trained checkpoint in the zoo")
    return "; chosen because " + " and ".join(reasons) if reasons else ""


def _map_backbone(mapper: Mapper, prefix: str, extractor: str) -> None:
    model = mapper.config.model.ssd
    multiplier = model.feature_extractor.depth_multiplier
    field_path = f"{prefix}.feature_extractor.depth_multiplier"
    if "mobilenet" in extractor and not math.isclose(multiplier, 1.0):
        became = mapper.override(
            ("task", "model", "backbone", "mobilenet", "filter_size_scale"), round(multiplier, 4)
        )
        mapper.claim(field_path, MAPPED, became)
    else:
        mapper.claim(
            field_path,
            MAPPED if math.isclose(multiplier, 1.0) else UNSUPPORTED,
            "",
            "the preset's width" if math.isclose(multiplier, 1.0) else "MobileNet only",
        )
    depth = re.search(r"resnet(?:_v1_)?(\d+)", extractor)
    if depth and depth.group(1) in ("101", "152"):
        became = mapper.override(
            ("task", "model", "backbone", "resnet", "model_id"), int(depth.group(1))
        )
        mapper.rows.append(
            Row(
                f"{prefix}.feature_extractor.type (depth)",
                depth.group(1),
                MAPPED,
                became,
                "Model Garden's ResNet at this depth",
            )
        )


def _map_levels(mapper: Mapper, prefix: str, preset: Any) -> None:
    if not mapper.has(prefix):
        return
    message = mapper.config.model.ssd.feature_extractor
    _claim_levels(mapper, prefix, message.fpn if prefix.endswith(".fpn") else message.bifpn, preset)
    mapper.claim(prefix, APPROXIMATED, "", "the preset's pyramid width and depth")


def _claim_levels(mapper: Mapper, prefix: str, message: Any, preset: Any) -> None:
    """Rows for `min_level` and `max_level` of a pyramid or anchor generator."""
    for name in ("min_level", "max_level"):
        same = getattr(message, name) == getattr(preset, name)
        mapper.claim(
            f"{prefix}.{name}",
            MAPPED if same else APPROXIMATED,
            f"{preset.name}: levels {preset.min_level}-{preset.max_level}",
            "" if same else "the preset's pyramid levels",
        )


def _map_anchors(mapper: Mapper, prefix: str, preset: Any) -> None:
    anchors = mapper.config.model.ssd.anchor_generator
    kind = anchors.WhichOneof("anchor_generator_oneof")
    if kind is None:
        return
    grid, sub = getattr(anchors, kind), f"{prefix}.{kind}"
    multiscale = kind == "multiscale_anchor_generator"
    anchor = ("task", "model", "anchor")
    if grid.aspect_ratios:
        became = mapper.override(
            (*anchor, "aspect_ratios"), [round(r, 4) for r in grid.aspect_ratios]
        )
        why = "" if multiscale else "the same ratios at every pyramid level"
        mapper.claim(f"{sub}.aspect_ratios", MAPPED if multiscale else APPROXIMATED, became, why)
    if multiscale:
        became = mapper.override((*anchor, "num_scales"), grid.scales_per_octave)
        mapper.claim(f"{sub}.scales_per_octave", MAPPED, became)
        became = mapper.override((*anchor, "anchor_size"), round(grid.anchor_scale, 4))
        mapper.claim(f"{sub}.anchor_scale", MAPPED, became)
        _claim_levels(mapper, sub, grid, preset)
    else:
        mapper.claim(
            sub,
            APPROXIMATED,
            "",
            "RetinaNet sizes anchors per level (anchor_size x stride) instead of SSD's min/max scale",
        )


def _map_num_classes(
    mapper: Mapper, field_path: str, num_classes: int, classes: int | None
) -> None:
    if classes is None:
        why = "tfod takes the classes from the dataset's label map"
        mapper.claim(field_path, MAPPED, "the dataset's label map", why)
    elif classes == num_classes:
        mapper.claim(
            field_path, MAPPED, "the dataset's label map", f"{classes} classes in the label map"
        )
    else:
        why = f"the label map has {classes} classes and tfod trains those (the file says {num_classes})"
        mapper.claim(field_path, APPROXIMATED, "the dataset's label map", why)


def _input_size(model: Any) -> int | None:
    resizer = model.image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        return int(max(resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width))
    if resizer.HasField("keep_aspect_ratio_resizer"):
        return int(resizer.keep_aspect_ratio_resizer.max_dimension)
    return None


def _map_resizer(mapper: Mapper, prefix: str, resizer: Any, size: int | None, preset: Any) -> None:
    if size is None:
        return
    square = preset.input_size
    stride = 2**preset.max_level
    notes = []
    if resizer.HasField("fixed_shape_resizer"):
        fixed = resizer.fixed_shape_resizer
        if fixed.height != fixed.width:
            notes.append("tfod's input is square")
        notes.append("Model Garden keeps the aspect ratio and pads instead of stretching")
    elif not resizer.keep_aspect_ratio_resizer.pad_to_max_dimension:
        notes.append("tfod pads every image to a square")
    if size != square:
        notes.insert(0, f"the preset's input is {square}x{square}")
        keep = f"to keep {size}x{size}, set overrides task.model.input_size [{size}, {size}, 3]"
        if size % stride:
            keep = (
                f"{size}x{size} cannot be kept: the input must be a multiple of 2^max_level = "
                f"{stride} or the pyramid's levels do not halve evenly (the API's 'Dimensions "
                "must be equal, but are 20 and 19' at 300x300 with an FPN)"
            )
        notes.append(keep)
    status = MAPPED if size == square and len(notes) <= 1 else APPROXIMATED
    mapper.claim(prefix, status, f"{preset.name}: {square}x{square}", "; ".join(notes))
