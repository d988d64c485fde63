"""tfod.yaml + dataset -> a `Plan` (every number the run will use) -> Model Garden's ExperimentConfig.

The experiment is always Model Garden's own registered one, overridden — never a parallel copy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tfod.config.presets import QAT_EXPERIMENT, YOLOV7_TINY_SIZE, Preset, get_preset
from tfod.config.schema import TfodConfig, parse_duration
from tfod.data.dataset import VAL_COCO_JSON
from tfod.errors import TfodError

# Batch-norm moving statistics average over ~1/(1 - momentum) steps. `auto` keeps that window
# within 1/30 of the run; the pre-flight check refuses a window longer than 1/10 of it (measured:
# momentum 0.99 for 300 steps from scratch gave AP 0.0 at every evaluation; 0.9 gave AP 0.586).
BN_AUTO_RUN_FRACTION = 30
BN_MIN_RUN_FRACTION = 10
BN_MOMENTUM_RANGE = (0.9, 0.99)
MAX_STEPS_PER_LOOP = 10
EMA_RUN_FRACTION = 10  # `ema: auto` averages over about a tenth of the run
EMA_DECAY_RANGE = (0.95, 0.9999)
PRECISION_DTYPES = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
"""train.precision -> Model Garden's runtime.mixed_precision_dtype (float16 with loss scaling)."""


def provisional_steps(budget: float) -> int:
    """The step count a timed run starts with, before it has measured itself (its warmup and
    batch-norm momentum are fitted to it; calibration replaces it within the first loops)."""
    return max(20, int(2 * budget))


def auto_decay(steps: int) -> float:
    """`ema: auto`: the decay whose averaging window (~1/(1-decay) steps) is a tenth of a
    `steps` run."""
    low, high = EMA_DECAY_RANGE
    return round(min(high, max(low, 1 - EMA_RUN_FRACTION / steps)), 5)


@dataclass(frozen=True)
class Plan:
    """The numbers a run uses, after defaults and `auto` are resolved."""

    preset: str
    batch_size: int
    steps: int
    learning_rate: float
    linear_rule_learning_rate: float
    warmup_steps: int
    norm_momentum: float
    steps_per_loop: int
    eval_every: int
    checkpoint_every: int
    num_classes: int
    train_images: int
    val_images: int
    dataset_fingerprint: str
    time_budget: float | None = None  # seconds (train.time); steps are then fitted to it
    ema_decay: float | None = None  # train.ema: the weights' moving average

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def linear_rule(preset: Preset, batch: int) -> float:
    """The preset's learning rate scaled linearly from its reference batch to `batch` (a summed
    loss scales its gradient with the batch itself: Preset.summed_loss)."""
    if preset.summed_loss:
        return preset.base_learning_rate
    return preset.base_learning_rate * batch / preset.reference_batch


MAX_RATE_FACTOR = 4.0
"""x the linear-scaling rule: the most `auto` picks, the rate a fine-tune starts at
(`tfod init --pretrained`) and the most the pre-flight check allows."""


def auto_rate(preset: Preset, batch: int) -> float:
    """`learning_rate: auto`: the preset's rate scaled by the square root of batch/reference
    batch below the reference batch (at most MAX_RATE_FACTOR x the linear rule), linearly above it.

    The presets' rates were tuned for long COCO schedules at batch 256, where linear scaling holds;
    scaled linearly down to a CPU or single-GPU batch of 8 they are 32x smaller and learn too
    slowly for short runs. Measured (`nox -s bench -- accuracy`, 10 min from scratch on 2 cores,
    batch 8): 0.04 instead of the linear 0.01 took AP50 from 0.288 to 0.386 on small objects in
    clutter; the demo's 0.04 had been found the same way (AP50 0.51 -> 0.74-0.83 in 400 steps).
    """
    linear = linear_rule(preset, batch)
    if batch >= preset.reference_batch or preset.summed_loss:
        return linear
    return min(
        MAX_RATE_FACTOR * linear,
        preset.base_learning_rate * math.sqrt(batch / preset.reference_batch),
    )


def make_plan(
    config: TfodConfig,
    summary: dict[str, Any],
    batch_size: int | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
) -> Plan:
    """Resolve defaults and `auto` values; command-line `batch_size`/`steps` win over the file.

    A timed run (`train.time`) without `steps` gets a provisional step count that calibration
    replaces (`tfod.train.budget`); `eval_every` wins over `eval.every_steps`.

    Raises:
        TfodError: `batch_size` or `steps` below 1 (checked as tfod.yaml checks the same fields).
    """
    for option, value in (("--batch-size", batch_size), ("--steps", steps)):
        if value is not None and value < 1:
            raise TfodError(f"{option} must be a whole number of at least 1, got {value}")
    preset = get_preset(config.model.preset)
    train = config.train
    configured = train.batch_size if isinstance(train.batch_size, int) else None
    batch = batch_size if batch_size is not None else configured or preset.batch_size
    budget = parse_duration(train.time) if train.time is not None else None
    if steps is None and budget is not None:
        steps = provisional_steps(budget)
        eval_every = eval_every or steps  # no evaluation before calibration
    n_steps = steps if steps is not None else train.steps or preset.steps
    linear = linear_rule(preset, batch)
    lr = auto_rate(preset, batch) if train.learning_rate == "auto" else float(train.learning_rate)
    warmup = (
        min(preset.warmup_steps, max(1, n_steps // 10))
        if train.warmup_steps == "auto"
        else int(train.warmup_steps)
    )
    if train.norm_momentum == "auto":
        low, high = BN_MOMENTUM_RANGE
        momentum = round(min(high, max(low, 1 - BN_AUTO_RUN_FRACTION / n_steps)), 4)
    else:
        momentum = float(train.norm_momentum)
    requested_eval = eval_every or config.eval.every_steps or max(1, n_steps // 10)
    per_loop = max(1, min(MAX_STEPS_PER_LOOP, requested_eval, n_steps))
    eval_every = per_loop * math.ceil(requested_eval / per_loop)
    checkpoint_every = train.checkpoint_every or eval_every
    return Plan(
        preset=preset.name,
        batch_size=batch,
        steps=n_steps,
        learning_rate=lr,
        linear_rule_learning_rate=linear,
        warmup_steps=warmup,
        norm_momentum=momentum,
        steps_per_loop=per_loop,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        num_classes=len(summary.get("classes", [])),
        train_images=int(summary.get("splits", {}).get("train", {}).get("images", 0)),
        val_images=int(summary.get("splits", {}).get("val", {}).get("images", 0)),
        dataset_fingerprint=str(summary.get("fingerprint", "")),
        time_budget=budget,
        ema_decay=(
            auto_decay(n_steps) if train.ema == "auto" else None if train.ema is None else train.ema
        ),
    )


def build_experiment(config: TfodConfig, plan: Plan) -> Any:
    """Model Garden's ExperimentConfig for this config and plan (validated, not locked).

    Raises:
        TfodError: an `overrides:` key Model Garden does not know, or a value it rejects.
    """
    from official.core import exp_factory

    preset = get_preset(plan.preset)
    experiment = exp_factory.get_exp_config(experiment_name(preset, qat=config.qat is not None))
    experiment.override(_tfod_overrides(config, plan, preset), is_strict=True)
    try:
        experiment.override(config.overrides, is_strict=True)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise TfodError(f"Model Garden rejects it: {err}", "overrides") from err
    if config.qat is not None:
        # Fake-quantize all of it, as Model Garden's published QAT recipe does: backbone, the FPN
        # (SpineNet-Mobile has none) and the head. The float weights come from the parent's
        # checkpoint, which the trainer sets as `quantization.pretrained_original_checkpoint`.
        experiment.task.quantization.override(
            {
                "quantize_detection_decoder": experiment.task.model.decoder.type == "fpn",
                "quantize_detection_head": True,
            }
        )
    try:
        experiment.validate()
    except (KeyError, ValueError, AttributeError) as err:
        raise TfodError(f"Model Garden rejects the resolved config: {err}", "overrides") from err
    return experiment


def experiment_name(preset: Preset, qat: bool) -> str:
    """The registered Model Garden experiment a run is built on (importing what registers it)."""
    from official.vision import registry_imports  # noqa: F401  (registers the experiments)

    if preset.family == "yolo":
        from official.projects.yolo.common import registry_imports as yolo  # noqa: F401
    if not qat:
        return preset.experiment
    from official.projects.qat.vision import registry_imports as qat_imports  # noqa: F401

    return QAT_EXPERIMENT


def _tfod_overrides(config: TfodConfig, plan: Plan, preset: Preset) -> dict[str, Any]:
    data = config.data.dir
    yolo = preset.family == "yolo"
    # YOLO's decoder maps COCO's 91 category ids onto 80 unless told not to; tfod's ids are 1..N.
    decoder = {"decoder": {"type": "simple_decoder", "simple_decoder": {"coco91_to_80": False}}}
    return {
        "runtime": {
            "mixed_precision_dtype": PRECISION_DTYPES[config.train.precision],
            "loss_scale": "dynamic" if config.train.precision == "mixed_float16" else None,
        },
        "task": {
            "init_checkpoint": config.model.init_checkpoint or "",
            "init_checkpoint_modules": _modules(config.model.init_modules),
            # Always our own COCO ground truth: Model Garden's fallback that builds it from the
            # TFRecords crashes under NumPy 2 (int() of a shape-[1] array in coco_utils).
            "annotation_file": str(data / VAL_COCO_JSON),
            "model": _yolo_model_overrides(plan, preset)
            if yolo
            else _model_overrides(plan, preset),
            "train_data": {
                "input_path": str(data / "train-*.tfrecord"),
                "global_batch_size": plan.batch_size,
                "dtype": "float32",
                "shuffle_buffer_size": max(1, min(10000, plan.train_images)),
                "seed": config.train.seed,
                "parser": _train_parser(set(config.train.augment), yolo),
                **(decoder if yolo else {}),
            },
            "validation_data": {
                "input_path": str(data / "val-*.tfrecord"),
                "global_batch_size": config.eval.batch_size,
                "dtype": "float32",
                "drop_remainder": False,
                **(decoder if yolo else {}),
            },
        },
        "trainer": _trainer_overrides(plan, yolo),
    }


def _train_parser(augment: set[str], yolo: bool) -> dict[str, Any]:
    """train.augment in the family's parser's terms (YOLO's mosaic stays as its recipe has it)."""
    scale = (0.8, 1.2) if "scale_jitter" in augment else (1.0, 1.0)
    return {
        "random_flip" if yolo else "aug_rand_hflip": "hflip" in augment,
        "aug_scale_min": scale[0],
        "aug_scale_max": scale[1],
    }


def _model_overrides(plan: Plan, preset: Preset) -> dict[str, Any]:
    model = merge(
        preset.model,
        {
            "num_classes": plan.num_classes + 1,  # Model Garden counts the background class
            "input_size": [preset.input_size, preset.input_size, 3],
            "min_level": preset.min_level,
            "max_level": preset.max_level,
            "norm_activation": {"use_sync_bn": False, "norm_momentum": plan.norm_momentum},
            # Model Garden's default NMS, v2, is padded for TPUs: it suppresses each class's 5000
            # best boxes whatever their scores, so an evaluation costs more the more classes there
            # are. TensorFlow's own kernel (`batched`) keeps the same boxes (tests/evaluate) and
            # evaluates many times faster on a CPU (docs/benchmarks.md), time that a timed run
            # spends on training.
            "detection_generator": {"nms_version": "batched"},
        },
    )
    backbone_type = model.get("backbone", {}).get("type")
    if preset.experiment == "retinanet_mobile_coco" and backbone_type is None:  # SpineNet-Mobile
        levels = {
            "min_level": preset.min_level,
            "max_level": preset.max_level,
            # Model Garden's QAT experiment turns it on; a QAT run must match its float parent.
            "use_keras_upsampling_2d": False,
        }
        model = merge(model, {"backbone": {"spinenet_mobile": levels}})
    return model


def _yolo_model_overrides(plan: Plan, preset: Preset) -> dict[str, Any]:
    """A YOLOv7's: the recipe's anchor boxes scaled to the preset's input size, tfod's batch-norm
    momentum (the recipe's 0.03 is PyTorch's convention, where Keras's momentum is 0.97), and at
    most 100 detections, the most COCO evaluation counts."""
    return merge(
        preset.model,
        {
            "num_classes": plan.num_classes + 1,  # ids 1..N, as the TFRecords hold them
            "input_size": [preset.input_size, preset.input_size, 3],
            "min_level": preset.min_level,
            "max_level": preset.max_level,
            "norm_activation": {"use_sync_bn": False, "norm_momentum": plan.norm_momentum},
            "anchor_boxes": {"boxes": [{"box": box} for box in yolo_anchor_boxes(preset)]},
            "detection_generator": {"max_boxes": 100},
        },
    )


def yolo_anchor_boxes(preset: Preset) -> list[list[float]]:
    """Model Garden's YOLOv7-tiny recipe's nine anchor boxes (width, height), scaled from its input
    size to the preset's."""
    from official.projects.yolo.configs import yolov7

    scale = preset.input_size / YOLOV7_TINY_SIZE
    boxes = yolov7.coco_yolov7_tiny().task.model.anchor_boxes.boxes
    return [[round(v * scale, 2) for v in anchor.box] for anchor in boxes]


def _trainer_overrides(plan: Plan, yolo: bool) -> dict[str, Any]:
    # YOLO's recipe averages its weights (EMA); tfod's `train.ema` decides, as for every family.
    ema = {"average_decay": plan.ema_decay} if plan.ema_decay else None if yolo else {}
    return {
        "train_steps": plan.steps,
        "validation_steps": -1,
        "validation_interval": plan.eval_every,
        "steps_per_loop": plan.steps_per_loop,
        "summary_interval": plan.steps_per_loop,
        "checkpoint_interval": plan.checkpoint_every,
        "max_to_keep": 5,
        # Its SIGTERM watcher saves and keeps training; tfod stops every worker cleanly instead.
        "preemption_on_demand_checkpoint": False,
        "optimizer_config": {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {
                "type": "cosine",
                "cosine": {
                    "initial_learning_rate": plan.learning_rate,
                    "decay_steps": plan.steps,
                },
            },
            "warmup": {
                "type": "linear",
                "linear": {
                    "warmup_steps": plan.warmup_steps,
                    "warmup_learning_rate": plan.learning_rate / 10,
                },
            },
            **({} if ema == {} else {"ema": ema}),
        },
    }


def _modules(init_modules: str) -> str | list[str]:
    return "all" if init_modules == "all" else init_modules.split("+")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, nested dictionaries key by key (neither is changed)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
