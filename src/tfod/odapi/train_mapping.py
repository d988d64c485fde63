"""A pipeline.config's `train_config`, `graph_rewriter` and `eval_config` -> the tfod.yaml's
train and eval sections and their Model Garden overrides."""

from __future__ import annotations

import math
import re
from typing import Any

from tfod.config.presets import get_preset, qat_presets
from tfod.odapi.mapper import APPROXIMATED, MAPPED, PLACEHOLDER, UNSUPPORTED, Mapper, Row

OPTIMIZER = ("trainer", "optimizer_config")


def map_train(mapper: Mapper) -> None:
    config = mapper.config
    train = config.train_config
    prefix = "train_config"
    if mapper.has(f"{prefix}.batch_size"):
        mapper.claim(
            f"{prefix}.batch_size", MAPPED, mapper.set("train", "batch_size", train.batch_size)
        )
    steps = train.num_steps
    qat = config.HasField("graph_rewriter") and config.graph_rewriter.HasField("quantization")
    if qat:
        _map_qat(mapper, steps)
    elif steps:
        mapper.claim(f"{prefix}.num_steps", MAPPED, mapper.set("train", "steps", steps))
    else:
        mapper.claim(
            f"{prefix}.num_steps",
            APPROXIMATED,
            "train.steps: the preset's",
            "0 trains forever in the API; tfod runs end",
        )
    _map_optimizer(mapper, steps)
    _map_augmentation(mapper)
    _map_fine_tune(mapper)


def _map_qat(mapper: Mapper, steps: int) -> None:
    quantization = mapper.config.graph_rewriter.quantization
    prefix = "graph_rewriter.quantization"
    delay = quantization.delay
    float_steps = min(delay, steps) if steps else delay
    qat_steps = steps - delay if steps > delay else max(1, float_steps // 10)
    mapper.qat_steps = qat_steps
    became = mapper.set(
        "train", "steps", float_steps, f"float steps; then `tfod qat` {qat_steps} steps"
    )
    why = (
        f"the API fake-quantizes after {delay} steps; tfod trains {float_steps} float steps, then "
        f"`tfod qat` trains {qat_steps} quantization-aware steps from the best float checkpoint "
        "(Model Garden cannot switch fake quantization on mid-run)"
    )
    mapper.claim(f"{prefix}.delay", MAPPED, became, why)
    mapper.claim("train_config.num_steps", MAPPED, became, f"float {float_steps} + QAT {qat_steps}")
    for name in ("weight_bits", "activation_bits"):
        bits = getattr(quantization, name)
        mapper.claim(
            f"{prefix}.{name}",
            MAPPED if bits == 8 else UNSUPPORTED,
            "tfod qat: 8-bit",
            "" if bits == 8 else "tfod's QAT and the int8 TFLite are 8-bit",
        )
    mapper.claim(
        f"{prefix}.symmetric",
        APPROXIMATED,
        "tfod qat",
        "Model Garden's QAT scheme: symmetric per-channel weights, asymmetric activations",
    )
    mapper.claim(prefix, MAPPED, "tfod qat", "quantization-aware training with defaults")
    if not get_preset(mapper.yaml["model"]["preset"]).qat:
        mapper.rows.append(
            Row(
                prefix,
                "",
                UNSUPPORTED,
                "",
                f"the preset {mapper.yaml['model']['preset']} has no QAT: `tfod qat` supports {', '.join(qat_presets())}",
            )
        )


def _map_optimizer(mapper: Mapper, steps: int) -> None:
    optimizer = mapper.config.train_config.optimizer
    kind = optimizer.WhichOneof("optimizer")
    prefix = f"train_config.optimizer.{kind}"
    if kind is None:
        return
    inner = getattr(optimizer, kind)
    became = "SGD with momentum 0.9 (tfod's)"
    if kind == "momentum_optimizer":
        momentum = inner.momentum_optimizer_value
        if not math.isclose(momentum, 0.9, rel_tol=1e-6):
            became = mapper.override(
                (*OPTIMIZER, "optimizer", "sgd", "momentum"), round(momentum, 6)
            )
        mapper.claim(f"{prefix}.momentum_optimizer_value", MAPPED, became)
    elif kind == "rms_prop_optimizer":
        rmsprop = {
            "rho": round(inner.decay, 6),
            "momentum": round(inner.momentum_optimizer_value, 6),
            "epsilon": round(inner.epsilon, 6),
        }
        became = mapper.override((*OPTIMIZER, "optimizer"), {"type": "rmsprop", "rmsprop": rmsprop})
        for name in ("decay", "momentum_optimizer_value", "epsilon"):
            mapper.claim(f"{prefix}.{name}", MAPPED, became)
    else:
        became = mapper.override((*OPTIMIZER, "optimizer"), {"type": "adam"})
    mapper.rows.append(Row(prefix, "{...}", MAPPED, became, ""))
    _map_schedule(mapper, f"{prefix}.learning_rate", inner.learning_rate, steps)
    mapper.claim(
        "train_config.optimizer.use_moving_average",
        UNSUPPORTED,
        "",
        "tfod does not average weights yet: it evaluates and exports the trained weights",
    )
    mapper.claim(
        "train_config.optimizer.moving_average_decay", UNSUPPORTED, "", "see use_moving_average"
    )


def _map_schedule(mapper: Mapper, prefix: str, rate: Any, steps: int) -> None:
    kind = rate.WhichOneof("learning_rate")
    sub = f"{prefix}.{kind}"
    schedule = (*OPTIMIZER, "learning_rate")
    if kind == "cosine_decay_learning_rate":
        cosine = rate.cosine_decay_learning_rate
        mapper.claim(
            f"{sub}.learning_rate_base",
            MAPPED,
            mapper.set("train", "learning_rate", _round(cosine.learning_rate_base)),
        )
        mapper.claim(
            f"{sub}.warmup_steps", MAPPED, mapper.set("train", "warmup_steps", cosine.warmup_steps)
        )
        mapper.claim(
            f"{sub}.warmup_learning_rate",
            APPROXIMATED,
            "",
            "tfod warms up from a tenth of the peak rate",
        )
        same = not steps or cosine.total_steps == steps
        mapper.claim(
            f"{sub}.total_steps",
            MAPPED if same else APPROXIMATED,
            "train.steps",
            "tfod's cosine decays to zero at the last step"
            + ("" if same else f" ({steps}, not {cosine.total_steps})"),
        )
        mapper.claim(
            f"{sub}.hold_base_rate_steps",
            UNSUPPORTED,
            "",
            "tfod's cosine starts decaying right after the warmup",
        )
    elif kind is not None:
        value, shape = _decay(kind, getattr(rate, kind))
        mapper.set("train", "learning_rate", value)
        became = mapper.override(schedule, shape)
        manual = rate.manual_step_learning_rate
        if kind == "manual_step_learning_rate" and manual.warmup and manual.schedule:
            mapper.set("train", "warmup_steps", manual.schedule[0].step)
            mapper.claim(
                f"{sub}.warmup",
                APPROXIMATED,
                "train.warmup_steps",
                "a linear warmup from a tenth of the rate",
            )
        why = "" if "warmup_steps" in mapper.yaml["train"] else "tfod keeps its short warmup (auto)"
        mapper.claim(sub, MAPPED, became, why)


def _decay(kind: str, rate: Any) -> tuple[float, dict[str, Any]]:
    """The API's constant, exponential or manual-step schedule: (initial rate, Model Garden's
    `learning_rate` config)."""
    if kind == "constant_learning_rate":
        value = _round(rate.learning_rate)
        return value, {"type": "constant", "constant": {"learning_rate": value}}
    value = _round(rate.initial_learning_rate)
    if kind == "exponential_decay_learning_rate":
        exponential = {
            "initial_learning_rate": value,
            "decay_steps": rate.decay_steps,
            "decay_rate": _round(rate.decay_factor),
            "staircase": rate.staircase,
        }
        return value, {"type": "exponential", "exponential": exponential}
    boundaries = [s.step for s in rate.schedule]
    values = [value, *(_round(s.learning_rate) for s in rate.schedule)]
    return value, {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}}


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _map_augmentation(mapper: Mapper) -> None:
    steps = mapper.config.train_config.data_augmentation_options
    augment: list[str] = []
    for index, step in enumerate(steps):
        kind = step.WhichOneof("preprocessing_step")
        path = f"train_config.data_augmentation_options[{index}]"
        if kind == "random_horizontal_flip":
            augment.append("hflip")
            mapper.claim(path, MAPPED, "train.augment: hflip")
        elif kind == "random_image_scale":
            augment.append("scale_jitter")
            mapper.claim(
                path, APPROXIMATED, "train.augment: scale_jitter", "tfod scales by 0.8-1.2"
            )
    for item in mapper.unknown:
        if re.search(
            r"(ssd_random_crop|random_crop|random_pad_image|random_scale_crop)", item.path
        ) and item.path.startswith("train_config.data_augmentation_options"):
            augment.append("scale_jitter")
    if steps or any(
        u.path.startswith("train_config.data_augmentation_options") for u in mapper.unknown
    ):
        mapper.set(
            "train",
            "augment",
            sorted(set(augment), key=["hflip", "scale_jitter"].index),
            "from data_augmentation_options",
        )


def _map_fine_tune(mapper: Mapper) -> None:
    from tfod.config.template import init_modules_for
    from tfod.zoo.catalog import ZOO

    train = mapper.config.train_config
    prefix = "train_config"
    if not train.fine_tune_checkpoint:
        return
    detection = (
        train.fine_tune_checkpoint_type in ("detection", "fine_tune", "full")
        or train.from_detection_checkpoint
    )
    preset = mapper.yaml["model"]["preset"]
    wanted = "detector" if detection else "backbone"
    entries = [
        e
        for e in ZOO.values()
        if e.fits(preset) and e.restores == wanted and not e.name.endswith("-qat")
    ]
    entries = entries or [e for e in ZOO.values() if e.fits(preset) and not e.name.endswith("-qat")]
    why = (
        "an Object Detection API checkpoint's variables do not map onto Model Garden's modules, "
        "so it cannot be restored"
    )
    if PLACEHOLDER in train.fine_tune_checkpoint:
        why += f" (and {PLACEHOLDER} is a placeholder)"
    if entries:
        entry = entries[0]
        if detection:
            modules, reason = init_modules_for(entry, mapper.classes or 0)
            if mapper.classes is None:
                reason = "a new classification head for your classes"
        else:
            modules, reason = "backbone", "the config restored a classification backbone only"
        score = f"{'COCO AP' if entry.restores == 'detector' else 'ImageNet top-1'} {entry.coco_ap}"
        mapper.set("model", "init_checkpoint", f"zoo:{entry.name}", f"{score}: {entry.note}")
        became = f"model.init_checkpoint: zoo:{entry.name}"
        why += f"; the matching start is the zoo's {entry.name} ({score})"
        if modules == "all" and "anchor" in mapper.overrides.get("task", {}).get("model", {}):
            modules, reason = "backbone+decoder", "the head is new: the config's anchors differ"
        mapper.set("model", "init_modules", modules, reason)
    else:
        became = "model.init_checkpoint: null (from scratch)"
        why += f"; the zoo has no checkpoint for {preset}: `tfod zoo list` shows what it has"
    mapper.claim(f"{prefix}.fine_tune_checkpoint", APPROXIMATED, became, why)
    mapper.claim(
        f"{prefix}.fine_tune_checkpoint_type", APPROXIMATED, became, "see fine_tune_checkpoint"
    )
    mapper.claim(
        f"{prefix}.from_detection_checkpoint", APPROXIMATED, became, "see fine_tune_checkpoint"
    )


def map_eval(mapper: Mapper) -> None:
    evaluation = mapper.config.eval_config
    prefix = "eval_config"
    metrics = list(evaluation.metrics_set)
    if metrics:
        if "coco_detection_metrics" in metrics:
            mapper.set("eval", "metric", "AP", "COCO box AP, as coco_detection_metrics")
            status, why = MAPPED, "tfod's COCO evaluation; best/ keeps the highest AP"
        elif any("pascal" in m or "oid" in m for m in metrics):
            mapper.set("eval", "metric", "AP50", "COCO AP at IoU 0.5: the VOC-style metric")
            status, why = (
                APPROXIMATED,
                "COCO AP50 (101-point interpolation) stands in for VOC mAP@0.5",
            )
        else:
            status, why = UNSUPPORTED, "tfod reports COCO box metrics"
        mapper.claim(f"{prefix}.metrics_set", status, "eval.metric", why)
    if mapper.has(f"{prefix}.batch_size"):
        mapper.claim(
            f"{prefix}.batch_size", MAPPED, mapper.set("eval", "batch_size", evaluation.batch_size)
        )
    mapper.claim(
        f"{prefix}.num_examples", APPROXIMATED, "", "tfod evaluates every validation image"
    )
