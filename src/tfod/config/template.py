"""`tfod init`: a commented tfod.yaml for a dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tfod import atomic
from tfod.config.experiment import MAX_RATE_FACTOR, experiment_name, linear_rule, yolo_anchor_boxes
from tfod.config.presets import PRESETS, SMOKE_SUFFIX, Preset, get_preset
from tfod.config.schema import parse_config, parse_duration
from tfod.errors import TfodError
from tfod.zoo.catalog import ZooEntry

if TYPE_CHECKING:
    import numpy as np

TEMPLATE = """\
# tfod.yaml: what to train. Everything not written here comes from the preset.
# Check it with `tfod config validate`; see every Model Garden setting with `tfod config show`.
name: {name}                      # the run folder is runs/<name>

data:
  dir: {data}                     # written by `tfod data convert` (paths are relative to this file)

model:
  preset: {preset}{preset_comment}
  # presets: {presets}
  init_checkpoint: {init_checkpoint}{init_comment}
  init_modules: {init_modules}{modules_comment}
{recipe}
train:
  batch_size: {batch}             # global batch over all GPUs
  {length}
  learning_rate: {learning_rate}
  warmup_steps: {warmup}
  norm_momentum: {momentum}
  augment: [hflip, scale_jitter]
  seed: 0

eval:
  every_steps: null               # default: 10 evaluations per run
  metric: AP                      # best/ keeps the checkpoint with the highest value
  batch_size: 8

{overrides}"""


OVERRIDES = "overrides: {}                     # raw Model Garden params for experts, e.g. {task: {model: {head: {num_convs: 2}}}}\n"
ANCHOR_OVERRIDES = """\
overrides:                        # raw Model Garden params for experts
  # Anchors fitted to your training boxes (k-means on their aspect ratios, the anchor size that
  # matches most): {fitted} of the boxes have an anchor at IoU >= 0.5, against {default} with the
  # preset's (size {size:g}, ratios {ratios}). Delete this to use those.
  task: {{model: {{anchor: {anchor}}}}}
"""
YOLO_ANCHOR_OVERRIDES = """\
overrides:                        # raw Model Garden params for experts
  # Anchor boxes fitted to your training boxes (k-means on their widths and heights): {fitted} of
  # the boxes have an anchor YOLO can match them to (sides within {threshold:g}x), against {default}
  # with the preset's. Delete this to use those.
  task: {{model: {{anchor_boxes: {anchor}}}}}
"""
TARGETS = ("phone", "server")
"""What `tfod init --target` chooses a detector for: a phone needs a TFLite model."""


BENCH_DATASETS = ("clutter", "large")
"""The families bench's generated datasets (`bench/accuracy_bench.py`)."""


@dataclass(frozen=True)
class Measured:
    """One preset at one budget in `nox -s bench -- families` (docs/benchmarks.md#detector-families):
    trained from scratch with `tfod init`'s defaults on 2 CPU cores, on each of BENCH_DATASETS."""

    preset: str
    minutes: int  # the training budget
    aps: tuple[float, float]  # its best COCO AP on each of BENCH_DATASETS
    tflite: bool  # its family exports TFLite, as a phone needs

    @property
    def ap(self) -> float:
        """The mean of its APs over the bench's datasets."""
        return sum(self.aps) / len(self.aps)


FAMILY_BENCH = (
    Measured("retinanet-mobilenetv2-320", 5, (0.266, 0.074), tflite=True),
    Measured("retinanet-mobilenetv2-320", 10, (0.670, 0.489), tflite=True),
    Measured("yolov7-tiny-416", 5, (0.010, 0.001), tflite=True),
    Measured("yolov7-tiny-416", 10, (0.111, 0.006), tflite=True),
    # Refused both budgets: 20 steps took 903 s and tfod asks for at least 24 min on a CPU.
    Measured("fasterrcnn-resnet50-fpn-640", 5, (0.0, 0.0), tflite=False),
    Measured("fasterrcnn-resnet50-fpn-640", 10, (0.0, 0.0), tflite=False),
)
DEFAULT_MINUTES = 10  # what `tfod init` chooses for without --time


def choose_family(minutes: float, target: str) -> tuple[Measured, str]:
    """The families bench's best row at its budget nearest `minutes` among the presets that run on
    `target`, and why (every row compared)."""
    nearest = min({m.minutes for m in FAMILY_BENCH}, key=lambda b: (abs(b - minutes), b))
    rows = [m for m in FAMILY_BENCH if m.minutes == nearest]
    fits = [m for m in rows if target != "phone" or m.tflite]
    best = max(fits, key=lambda m: m.ap)
    scores = ", ".join(
        f"{m.preset} {m.ap:.2f}" + ("" if m in fits else " (no TFLite)") for m in rows
    )
    return best, (
        f"the best mean AP on the bench's {len(BENCH_DATASETS)} datasets after {nearest} min from "
        f"scratch on 2 CPU cores for a {target} ({scores})"
    )


SCRATCH_PRESETS = ("retinanet-mobilenetv2-256", "retinanet-mobilenetv2-320")
SMALLEST_OBJECT = 16  # px at the input: two cells of the finest level (stride 8)
FINE_TUNE_STEPS = 2000
COCO_CLASSES = 90  # the published detectors' heads: 90 COCO ids + background

RECIPE = f"""\
# Fine-tuning recipe (from a published checkpoint, not from scratch):
#   steps {FINE_TUNE_STEPS}: the backbone and decoder already see objects; a few hundred images
#     converge in a few thousand steps (from scratch the presets use 20000).
#   init_modules: the classification head is new (your classes), so it must learn as fast as from
#     scratch: learning_rate is {MAX_RATE_FACTOR:g}x the preset's linear-scaling rule at this batch.
#   warmup_steps and norm_momentum: auto, fitted to the run length; the new head's batch-norm
#     statistics start from nothing (momentum 0.99 keeps them stale for hundreds of steps).
#   What it is worth against training from scratch: tfod's docs/benchmarks.md ("Pretrained
#     starts"). With 0.5x or 1x the rule, a 100-step warmup and momentum 0.99 the new head
#     stayed below the score threshold: AP 0.0.
"""


def init_modules_for(entry: ZooEntry, classes: int) -> tuple[str, str]:
    """What to restore from the zoo checkpoint `entry` for a dataset of `classes` classes, and why."""
    if entry.restores == "backbone":
        return "backbone", "the checkpoint has only a backbone"
    if classes == COCO_CLASSES:
        return "all", "your classes are as many as COCO's: the head is restored too"
    return (
        "backbone+decoder",
        f"a new classification head for your {classes} classes (COCO's has {COCO_CLASSES})",
    )


def choose_preset(data: Path) -> tuple[str, str]:
    """The from-scratch preset for the dataset in `data`, and why: the smallest input at which
    nine in ten training objects span at least SMALLEST_OBJECT pixels (smaller inputs train and
    run faster)."""
    import numpy as np

    from tfod.config.anchors import training_box_sizes

    for name in SCRATCH_PRESETS:
        size = get_preset(name).input_size
        sides = np.sqrt(np.prod(training_box_sizes(data, size), axis=1))
        if not len(sides):
            return name, "no training boxes to measure; the fastest preset"
        small = float(np.quantile(sides, 0.1))
        if small >= SMALLEST_OBJECT:
            return name, (
                f"at {size} px, 9 in 10 of your objects are {small:.0f} px or larger (enough "
                f"from {SMALLEST_OBJECT} px)"
            )
    return SCRATCH_PRESETS[-1], (
        f"1 in 10 of your objects is under {small:.0f} px even at {size} px: small for these "
        "detectors; retinanet-spinenet49-mobile-384 sees them larger, if slower"
    )


def suggest_anchors(data: Path, preset: str) -> str:
    """The overrides: section, with anchors fitted to the training boxes when they match at
    least MIN_GAIN more of them than the preset's."""
    from official.core import exp_factory

    from tfod.config.anchors import MIN_GAIN, fit_anchors, training_box_sizes

    chosen = get_preset(preset)
    sizes = training_box_sizes(data, chosen.input_size)
    if not len(sizes):
        return OVERRIDES
    if chosen.family == "yolo":
        return _suggest_yolo_anchors(sizes, chosen)
    anchor = exp_factory.get_exp_config(experiment_name(chosen, qat=False)).task.model.anchor
    anchor.override(chosen.model.get("anchor", {}))
    default, fitted = fit_anchors(
        sizes,
        chosen.min_level,
        chosen.max_level,
        anchor.anchor_size,
        list(anchor.aspect_ratios),
        anchor.num_scales,
    )
    if fitted.recall < default.recall + MIN_GAIN:
        return OVERRIDES
    import json

    return ANCHOR_OVERRIDES.format(
        fitted=f"{fitted.recall:.0%}",
        default=f"{default.recall:.0%}",
        size=default.anchor_size,
        ratios="/".join(f"{r:g}" for r in default.aspect_ratios),
        anchor=json.dumps(fitted.override()).replace('"', ""),
    )


def _suggest_yolo_anchors(sizes: np.ndarray, chosen: Preset) -> str:
    """`suggest_anchors` for a YOLO preset: its nine anchor boxes, or as many fitted."""
    import json

    from tfod.config.anchors import MIN_GAIN, YOLO_ANCHOR_THRESHOLD, fit_yolo_anchors

    default, fitted = fit_yolo_anchors(sizes, yolo_anchor_boxes(chosen))
    if fitted.recall < default.recall + MIN_GAIN:
        return OVERRIDES
    return YOLO_ANCHOR_OVERRIDES.format(
        fitted=f"{fitted.recall:.0%}",
        default=f"{default.recall:.0%}",
        threshold=YOLO_ANCHOR_THRESHOLD,
        anchor=json.dumps(fitted.override()).replace('"', ""),
    )


def write_template(
    out: Path,
    data: Path,
    preset: str | None,
    name: str | None,
    force: bool,
    pretrained: str | None = None,
    time: str | None = None,
    target: str = "phone",
) -> None:
    """Write a tfod.yaml for the dataset `data` to `out` (refusing to overwrite unless `force`).

    Without `preset`, the detector family is the one that scored best in the families bench for
    the training budget `time` (default DEFAULT_MINUTES) among those that run on `target`, and a
    RetinaNet's preset is chosen for the dataset's object sizes (both said in the file). `time`
    also becomes the file's `train.time` (instead of steps). From
    scratch, anchors fitted to the training boxes are written when they match more of them. With
    `pretrained` (a zoo name), the preset is the one matching that checkpoint and the training
    section is a fine-tuning recipe.
    """
    if out.exists() and not force:
        raise TfodError("exists; pass --force to overwrite it", out)
    if target not in TARGETS:
        raise TfodError(f"--target takes one of {', '.join(TARGETS)}; got {target!r}")
    fields: dict[str, object] = {
        "init_checkpoint": "null",
        "init_comment": "           # zoo:NAME (`tfod zoo list`), a URL, a checkpoint or a run",
        "init_modules": "backbone",
        "modules_comment": "          # backbone | backbone+decoder | all (a head for other classes is re-initialised)",
        "recipe": "",
        "learning_rate": "auto             # preset rate scaled to the batch (square root below its own), with warmup",
        "warmup": "auto",
        "momentum": "auto             # batch-norm momentum fitted to the number of steps",
        "preset_comment": "",
        "overrides": OVERRIDES,
    }
    minutes = parse_duration(time) / 60 if time is not None else DEFAULT_MINUTES
    if preset is None and pretrained is None:
        best, family_why = choose_family(minutes, target)
        preset, why = choose_preset(data) if get_preset(best.preset).family == "retinanet" else (
            best.preset, "")  # fmt: skip
        fields["preset_comment"] = (f"  # chosen for your data: {why}" if why else "") + (
            f"\n  # its family: {family_why} (docs/benchmarks.md#detector-families)"
        )
    if pretrained is not None:
        from tfod.data.dataset import load_summary
        from tfod.zoo.catalog import get_entry

        entry = get_entry(pretrained)
        preset = entry.preset
        modules, why = init_modules_for(entry, len(load_summary(data).get("classes", [])))
        score = f"ImageNet top-1 {entry.coco_ap}" if entry.restores == "backbone" else (
            f"COCO AP {entry.coco_ap}"
        )  # fmt: skip
        fields.update(
            init_checkpoint=f"zoo:{entry.name}",
            init_comment=f"  # {score}; downloaded once into the cache",
            init_modules=modules,
            modules_comment=f"  # {why}",
            recipe=RECIPE,
        )
    assert preset is not None
    chosen = get_preset(preset)
    if pretrained is None:
        fields["overrides"] = suggest_anchors(data, chosen.name)
    if pretrained is not None:
        rate = MAX_RATE_FACTOR * linear_rule(chosen, chosen.batch_size)
        fields["learning_rate"] = f"{rate:.4g}"
    relative = os.path.relpath(data.resolve(), out.resolve().parent)
    text = TEMPLATE.format(
        name=name or data.resolve().name or "run",
        data=relative,
        preset=chosen.name,
        presets=", ".join(p for p in PRESETS if not p.endswith(SMOKE_SUFFIX)),
        batch=chosen.batch_size,
        length=(
            f"time: {time}                  # a wall-clock budget: the steps are fitted to it"
            if time is not None
            else f"steps: {FINE_TUNE_STEPS if pretrained else chosen.steps}"
        ),
        **fields,
    )
    import yaml

    parse_config(yaml.safe_load(text), out)  # the template itself must satisfy the schema
    atomic.write_text(out, text)
