"""Pre-flight checks: everything that would fail or silently not learn, found before any step.

Each finding names the tfod.yaml field and says what to do. Errors stop `tfod train`; warnings are
printed. `tfod config validate` prints them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from rich.console import Console
from rich.markup import escape

from tfod.config.experiment import BN_MIN_RUN_FRACTION, MAX_RATE_FACTOR, Plan
from tfod.config.presets import get_preset
from tfod.config.schema import TfodConfig
from tfod.data.dataset import LABEL_MAP, VAL_COCO_JSON
from tfod.errors import TfodError, describe
from tfod.train.budget import MIN_BUDGET_SECONDS
from tfod.train.cluster import Placement

LR_TOO_LOW = 0.25  # x the linear-scaling rule
SMALL_BN_BATCH = 8  # per replica; below it batch-norm statistics are noisy
MAX_INPUT_SIDE = 4096  # pixels
YOLO_MIN_RECALL = 0.98  # YOLO's autoanchor refits below this share of boxes an anchor can learn
BOX_SAMPLE = 5000  # training pictures whose boxes the anchor check reads


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    field: str
    message: str


def run_checks(
    config: TfodConfig,
    plan: Plan,
    summary: dict[str, Any],
    experiment: Any,
    placement: Placement | None = None,
) -> list[Finding]:
    """All pre-flight findings for this config, plan, dataset summary and resolved experiment,
    trained where `placement` says (default: one device)."""
    findings: list[Finding] = []

    def error(field: str, message: str) -> None:
        findings.append(Finding("error", field, message))

    def warning(field: str, message: str) -> None:
        findings.append(Finding("warning", field, message))

    _check_data(config, summary, error)
    _check_masks(config, plan.preset, summary, error)
    _check_overridden_records(config, experiment, error)
    _check_trainer(experiment.trainer, error)
    model = experiment.task.model
    _check_classes(config, model.num_classes, error)
    _check_input_size(list(model.input_size), int(model.max_level), error)
    if plan.time_budget is not None and plan.time_budget < MIN_BUDGET_SECONDS:
        error(
            "train.time",
            f"{config.train.time} is too short: building and tracing the model alone takes tens of "
            f"seconds; give at least {MIN_BUDGET_SECONDS:.0f}s",
        )
    placement = placement or Placement("one_device", 0)
    _check_batch(plan, placement, error)
    _check_learning_rate(config, plan, placement.replicas, error, warning)
    _check_norm_momentum(config, plan, model, error, warning)
    _check_yolo_anchors(config, plan, model, warning)
    _check_mask_size(experiment, warning)
    _check_hardware(config, plan, placement, model, warning)
    if experiment.task.init_checkpoint:
        _check_checkpoint(config, experiment, error)
    if config.qat is not None:
        _check_qat(config, experiment, error)
    return findings


def raise_on_errors(findings: list[Finding], console: Console) -> None:
    """Print warnings; raise one TfodError listing every error."""
    for f in findings:
        if f.severity == "warning":
            console.print(f"[yellow]warning[/yellow] {f.field}: {escape(f.message)}")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        lines = "\n".join(f"  {f.field}: {f.message}" for f in errors)
        raise TfodError(
            f"pre-flight check failed ({len(errors)} error(s)), nothing was trained:\n{lines}"
        )


def _check_batch(plan: Plan, placement: Placement, error: Any) -> None:
    if 0 < plan.train_images < plan.batch_size:
        error(
            "train.batch_size",
            f"batch {plan.batch_size} is larger than the {plan.train_images} training images; "
            f"use at most {plan.train_images} (or add images)",
        )
    replicas = placement.replicas
    if plan.batch_size % replicas:
        lower = plan.batch_size // replicas * replicas
        error(
            "train.batch_size",
            f"the global batch {plan.batch_size} does not divide among {replicas} replicas "
            f"({placement.strategy}); use a multiple of {replicas}, e.g. "
            f"{max(replicas, lower)} or {lower + replicas}",
        )


def _check_learning_rate(
    config: TfodConfig, plan: Plan, replicas: int, error: Any, warning: Any
) -> None:
    ratio = plan.learning_rate / plan.linear_rule_learning_rate
    spread = (
        f", {plan.batch_size // replicas} on each of {replicas} replicas" if replicas > 1 else ""
    )
    rule = (
        f"the linear-scaling rule gives {plan.linear_rule_learning_rate:.4g} for the global batch "
        f"{plan.batch_size}{spread} (the preset's rate scaled by global batch/reference batch); "
        "`learning_rate: auto` gives 1x to 4x that: more for small batches (square-root scaling)"
    )
    if ratio > MAX_RATE_FACTOR:
        times = f"{ratio:.1f}x" if ratio < 1000 else "over 1000x"
        error(
            "train.learning_rate",
            f"{plan.learning_rate:g} is {times} too high and will likely diverge: {rule}",
        )
    elif ratio < LR_TOO_LOW and config.qat is None:  # QAT fine-tunes at a tenth by design
        warning(
            "train.learning_rate",
            f"{plan.learning_rate:g} is {1 / ratio:.1f}x below the rule and will learn slowly: {rule}",
        )


def _check_norm_momentum(
    config: TfodConfig, plan: Plan, model: Any, error: Any, warning: Any
) -> None:
    momentum = float(model.norm_activation.norm_momentum)
    window = 1.0 / max(1e-9, 1.0 - momentum)
    chosen_by_user = momentum != plan.norm_momentum or config.train.norm_momentum != "auto"
    if chosen_by_user and window * BN_MIN_RUN_FRACTION > plan.steps:
        needed = math.ceil(window * BN_MIN_RUN_FRACTION)
        # From a checkpoint the statistics start right and a slow momentum keeps them: a warning.
        report = warning if config.model.init_checkpoint else error
        report(
            "train.norm_momentum",
            f"batch-norm momentum {momentum} averages its statistics over ~{window:.0f} steps, too slow for "
            f"{plan.steps} steps: evaluation would use statistics that lag far behind the weights "
            f"(measured: momentum 0.99 for 300 steps scored AP 0.0 while the loss fell; 0.9 scored 0.59). "
            f"Use `norm_momentum: auto`, a momentum <= {max(0.0, 1 - BN_MIN_RUN_FRACTION / plan.steps):.3f}, "
            f"or at least {needed} steps",
        )


def _check_hardware(
    config: TfodConfig, plan: Plan, placement: Placement, model: Any, warning: Any
) -> None:
    replicas = placement.replicas
    if config.train.precision != "float32" and placement.gpus == 0:
        warning(
            "train.precision",
            f"{config.train.precision} is a GPU (float16) / TPU (bfloat16) setting: this host has no "
            "GPU, where TensorFlow runs it but emulates the half-precision maths (slower than "
            "float32; `nox -s bench -- distribute` measures it)",
        )
    per_replica = plan.batch_size // max(1, replicas)
    if per_replica < SMALL_BN_BATCH and not model.norm_activation.use_sync_bn:
        warning(
            "train.batch_size",
            f"{per_replica} images per replica is below {SMALL_BN_BATCH}: batch-norm statistics from "
            "so few images are noisy (at batch 1 detectors 'detect everything, then nothing'). Use a "
            "larger batch (`batch_size: auto` finds the largest that fits); or fine-tune from a "
            "checkpoint with the backbone's batch norm frozen (`overrides: {task: {freeze_backbone: "
            "true}}`); or, on several GPUs, sync batch norm across them (`overrides: {task: {model: "
            "{norm_activation: {use_sync_bn: true}}}}`)",
        )


def _check_data(config: TfodConfig, summary: dict[str, Any], error: Any) -> None:
    directory = config.data.dir
    for name in (LABEL_MAP, VAL_COCO_JSON):
        if not (directory / name).is_file():
            error("data.dir", f"{directory / name} is missing; re-run `tfod data convert`")
    splits = summary.get("splits", {})
    if not any(splits.get(split, {}).get("images") for split in ("train", "val")):
        error("data.dir", f"{directory} holds no images; convert a source with labelled images")
        return
    for split in ("train", "val"):
        shards = splits.get(split, {}).get("shards", [])
        missing = [s for s in shards if not (directory / s).is_file()]
        if not shards or missing:
            error(
                "data.dir",
                f"{split} shards missing in {directory} ({', '.join(missing) or 'none listed'})",
            )
        elif not splits[split].get("images"):
            other = "train" if split == "val" else "val"
            error(
                "data.dir",
                f"the {split} split of {directory} has no images (all are in {other}); convert "
                f"again with --val-fraction {'0.2' if split == 'val' else 'below 1'}",
            )
    if splits.get("train", {}).get("images") and not splits["train"].get("boxes"):
        error(
            "data.dir",
            f"the train split of {directory} has no boxes: a detector learns nothing from it; "
            "check the conversion's problems (`tfod data stats`)",
        )


def _check_masks(config: TfodConfig, preset: str, summary: dict[str, Any], error: Any) -> None:
    """A Mask R-CNN learns masks from the dataset's: it needs a dataset converted with them."""
    if get_preset(preset).family != "maskrcnn":
        return
    splits = summary.get("splits", {})
    if not splits.get("train", {}).get("masks"):
        error(
            "model.preset",
            f"{preset} learns instance masks, and {config.data.dir} has none: "
            "convert a source with masks (COCO segmentation, YOLO-seg, VOC SegmentationObject, "
            "Object Detection API records with image/object/mask; `tfod data demo --masks`), or "
            "train boxes alone with fasterrcnn-resnet50-fpn-640",
        )


def _check_mask_size(experiment: Any, warning: Any) -> None:
    """Mask R-CNN's mask targets (mask_roi_aligner.crop_size x mask_head.upsample_factor pixels a
    side) are resampled from the ground-truth masks its parser crops to `mask_crop_size`."""
    model = experiment.task.model
    if not getattr(model, "include_mask", False):
        return
    crop_size, factor = model.mask_roi_aligner.crop_size, model.mask_head.upsample_factor
    crop = experiment.task.train_data.parser.mask_crop_size
    if crop >= crop_size * factor:
        return
    warning(
        "overrides.task.train_data.parser.mask_crop_size",
        f"{crop} px is below the mask targets' {crop_size * factor} px (mask_roi_aligner.crop_size "
        f"{crop_size} x mask_head.upsample_factor {factor}): the ground-truth masks are cropped to "
        f"{crop} px and enlarged, so the model learns masks no finer than that; set it to at least "
        f"{crop_size * factor}",
    )


def _check_yolo_anchors(config: TfodConfig, plan: Plan, model: Any, warning: Any) -> None:
    """YOLO learns a box only through an anchor box whose sides are both within
    YOLO_ANCHOR_THRESHOLD of its own: a box no anchor box matches is never learnt."""
    if get_preset(plan.preset).family != "yolo":
        return
    import tensorflow as tf

    from tfod.config.anchors import (
        MIN_GAIN,
        YOLO_ANCHOR_THRESHOLD,
        fit_yolo_anchors,
        training_box_sizes,
    )

    try:
        sizes = training_box_sizes(config.data.dir, int(model.input_size[0]), BOX_SAMPLE)
    except (OSError, KeyError, TfodError, tf.errors.OpError):  # the data checks name the file
        return
    if not len(sizes):
        return
    given, fitted = fit_yolo_anchors(sizes, [list(a.box) for a in model.anchor_boxes.boxes])
    if given.recall >= YOLO_MIN_RECALL:
        return
    fix = (
        f": `tfod init --data {config.data.dir} --preset {plan.preset} --out fitted.yaml` writes "
        "them in its overrides: section"
        if fitted.recall >= given.recall + MIN_GAIN
        else ", no more than these"
    )
    warning(
        "overrides.task.model.anchor_boxes",
        f"{1 - given.recall:.0%} of the training boxes have no anchor box with both sides within "
        f"{YOLO_ANCHOR_THRESHOLD:g}x of their own: YOLO never learns them. Anchor boxes fitted to "
        f"the boxes match {fitted.recall:.0%}{fix}",
    )


def _check_classes(config: TfodConfig, num_classes: int, error: Any) -> None:
    from tfod.data.labelmap import read_label_map

    path = config.data.dir / LABEL_MAP
    if not path.is_file():
        return
    try:
        labels = read_label_map(path)
    except TfodError as err:
        error("data.dir", str(err))
        return
    if num_classes != len(labels) + 1:
        error(
            "overrides.task.model.num_classes",
            f"num_classes {num_classes} disagrees with {path}: {len(labels)} classes + background = "
            f"{len(labels) + 1}. Remove the override; tfod sets it from the label map",
        )
    if sorted(labels) != list(range(1, len(labels) + 1)):
        error("data.dir", f"{path} ids must be 1..{len(labels)} without gaps")


def _check_input_size(size: list[int], max_level: int, error: Any) -> None:
    stride = 2**max_level
    if not all(stride <= side <= MAX_INPUT_SIDE for side in size[:2]):
        error(
            "overrides.task.model.input_size",
            f"{size[0]}x{size[1]} is outside {stride}..{MAX_INPUT_SIDE} pixels a side: the "
            f"coarsest feature level (2^{max_level}) needs at least {stride}, and a side over "
            f"{MAX_INPUT_SIDE} runs out of memory on any accelerator",
        )
        return
    for side in size[:2]:
        if side % stride:
            lower, upper = side // stride * stride, (side // stride + 1) * stride
            error(
                "overrides.task.model.input_size",
                f"{side} is not a multiple of 2^max_level = {stride}: the FPN's upsampled and lateral "
                f"features would differ by one cell ('Dimensions must be equal, but are 20 and 19'). "
                f"Use {lower or stride} or {upper}, or lower max_level",
            )
            return


def _check_overridden_records(config: TfodConfig, experiment: Any, error: Any) -> None:
    """Record files that `overrides:` names instead of the dataset's must be TFRecords."""
    import glob

    import tensorflow as tf

    for split, data in (
        ("train", experiment.task.train_data),
        ("val", experiment.task.validation_data),
    ):
        pattern = str(data.input_path)
        if pattern == str(config.data.dir / f"{split}-*.tfrecord"):
            continue  # the dataset's own shards: checked with the dataset
        field = f"overrides.task.{'train' if split == 'train' else 'validation'}_data.input_path"
        files = sorted(glob.glob(pattern))  # noqa: PTH207 (absolute globs)
        if not files:
            error(field, f"{pattern!r} matches no file")
            continue
        irregular = [f for f in files if not Path(f).is_file()]
        if irregular:
            error(field, f"{irregular[0]} is not a regular file")
            continue
        try:
            for record in tf.data.TFRecordDataset(files[0]).take(1).as_numpy_iterator():
                tf.train.Example.FromString(record)
        except (tf.errors.OpError, DecodeError) as err:
            error(
                field, f"{files[0]} is not a TFRecord file of tf.train.Examples ({describe(err)})"
            )


def _check_trainer(trainer: Any, error: Any) -> None:
    """Counts that `overrides:` may set and Model Garden's loop needs positive."""
    for name in (
        "train_steps",
        "steps_per_loop",
        "checkpoint_interval",
        "validation_interval",
        "max_to_keep",
    ):
        value = getattr(trainer, name)
        if not isinstance(value, int) or value < 1:
            error(f"overrides.trainer.{name}", f"{value!r} must be a whole number of at least 1")
    loop, summary = trainer.steps_per_loop, trainer.summary_interval
    if (
        isinstance(loop, int)
        and loop >= 1
        and (not isinstance(summary, int) or summary < 1 or summary % loop)
    ):
        error(
            "overrides.trainer.summary_interval",
            f"{summary!r} must be a positive multiple of steps_per_loop ({loop})",
        )


def _check_checkpoint(config: TfodConfig, experiment: Any, error: Any) -> None:
    from tfod.train import finetune

    model = experiment.task.model
    classifier = model.num_classes * model.anchor.num_scales * len(model.anchor.aspect_ratios)
    checkpoint = str(experiment.task.init_checkpoint)
    field = "model.init_checkpoint"
    if checkpoint != str(config.model.init_checkpoint or ""):
        field = "overrides.task.init_checkpoint"
    try:
        finetune.plan_restore(checkpoint, experiment.task.init_checkpoint_modules, classifier)
    except TfodError as err:
        error(field, str(err))


def _check_qat(config: TfodConfig, experiment: Any, error: Any) -> None:
    from tfod.train import qat

    try:
        qat.check_supported(config.model.preset)
    except TfodError as err:
        error("model.preset", str(err))
        return
    problem = qat.spinenet_problem(experiment)
    if problem:
        error("overrides", problem)
    head = experiment.task.model.head
    if not head.use_separable_conv or head.attribute_heads:
        error(
            "overrides",
            "quantization-aware training builds the RetinaNet head with separable convs and no "
            "attribute heads only: remove the overrides of task.model.head",
        )
