"""`tfod qat`: quantization-aware training of a float run, on Model Garden's QAT RetinaNet.

A QAT run is an ordinary tfod run (progress, clean stop and resume, evaluation, best/, plots)
whose tfod.yaml is its float parent's plus a `qat:` section. Its experiment is Model Garden's
`retinanet_mobile_coco_qat` (`official/projects/qat/vision/`): the same architecture with backbone,
FPN and head fake-quantized (TensorFlow Model Optimization), its float weights read from
`quantization.pretrained_original_checkpoint`.

That checkpoint is a copy of the parent's, taken when the QAT run starts, in RUN/parent/ with the
parent's run.json, tfod.yaml and experiment.yaml: the parent may go on training or rotate its
checkpoints, and the QAT run still resumes, exports and verifies against the very float model it
came from.

The Object Detection API's `graph_rewriter { quantization { delay: N } }` trained N float steps and
then switched fake-quantization on inside one run. Model Garden's QAT cannot switch mid-run (the
fake-quant model is built once, before the first step), so `delay` maps onto two runs: train float
N steps, then `tfod qat`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

from tfod import atomic
from tfod.config.presets import SPINENET_QAT_OVERRIDE, get_preset, qat_presets
from tfod.config.schema import QatSection, TfodConfig, load_config
from tfod.errors import TfodError
from tfod.runs.rundir import (
    CONFIG_COPY,
    EXPERIMENT_YAML,
    PARENT,
    RUN_JSON,
    RunDir,
    copy_checkpoint,
    pick_checkpoint,
)

QAT_SUFFIX = "-qat"
RANGE_RUN_FRACTION = 30
RANGE_DECAY_LIMITS = (0.9, 0.999)
LR_FACTOR = 0.1
"""A QAT run fine-tunes a converged float model: a tenth of the parent's peak learning rate."""
STEPS_FRACTION = 0.1
"""Default QAT length: a tenth of the parent's steps (Model Garden's recipe fine-tunes briefly)."""


def qat_config(
    parent: RunDir, name: str | None = None, steps: int | None = None, checkpoint: str = "best"
) -> TfodConfig:
    """The tfod.yaml of a QAT run of `parent`: the parent's own, with the QAT section, a
    fine-tuning learning rate and length, and no `init_checkpoint` (the weights are the parent's).

    Raises:
        TfodError: `parent` is not a float run of a preset Model Garden's QAT builds.
    """
    parent.require()
    config = load_config(parent.path / CONFIG_COPY)
    if config.qat is not None:
        raise TfodError(
            f"{parent.name} is itself a QAT run; give its float parent ({config.qat.parent})",
            parent.path,
        )
    check_supported(config.model.preset)
    plan = parent.read().get("plan") or {}
    parent_steps = int(plan.get("steps") or config.train.steps or 1)
    parent_lr = float(plan.get("learning_rate") or 0.0)
    if not parent_lr:
        raise TfodError("the parent run has no plan yet: it has not started training", parent.path)
    train = config.train.model_copy(
        update={
            "steps": steps or max(1, round(parent_steps * STEPS_FRACTION)),
            "learning_rate": parent_lr * LR_FACTOR,
            "warmup_steps": "auto",
            "norm_momentum": "auto",
        }
    )
    model = config.model.model_copy(update={"init_checkpoint": None, "init_modules": "backbone"})
    return config.model_copy(
        update={
            "name": name or parent.name + QAT_SUFFIX,
            "train": train,
            "model": model,
            "qat": QatSection(parent=parent.path.resolve(), checkpoint=checkpoint),
        }
    )


def check_supported(preset_name: str) -> None:
    """A TfodError listing the presets Model Garden's QAT builds, if `preset_name` is not one."""
    preset = get_preset(preset_name)
    if not preset.qat:
        raise TfodError(
            f"Model Garden's quantization-aware training cannot build {preset_name!r} (its FPN "
            "or backbone has layers TensorFlow Model Optimization cannot quantize); QAT supports "
            f"{', '.join(qat_presets())} (and their -smoke twins). Train a float run of one of "
            "them first.",
            "model.preset",
        )


def spinenet_problem(experiment: Any) -> str | None:
    """Why this SpineNet-Mobile experiment cannot be quantization-aware trained (None: it can)."""
    backbone = experiment.task.model.backbone
    if backbone.type != "spinenet_mobile" or backbone.spinenet_mobile.use_keras_upsampling_2d:
        return None
    return (
        "SpineNet-Mobile's QAT needs Keras UpSampling2D layers, which change the checkpoint's "
        "layout: train the float parent with `overrides: "
        f"{SPINENET_QAT_OVERRIDE}`"
    )


def attach_parent(run: RunDir, config: TfodConfig, experiment: Any) -> dict[str, Any]:
    """Point `experiment` at the float checkpoint the QAT run starts from, copying it into
    RUN/parent/ the first time; returns what run.json records as `qat`.

    Raises:
        TfodError: the parent run or its checkpoint cannot be found (first start only).
    """
    assert config.qat is not None
    snapshot = RunDir(run.path / PARENT)
    if not snapshot.exists():
        _snapshot(RunDir(config.qat.parent).require(), config.qat.checkpoint, snapshot)
    step, prefix = snapshot.checkpoint("latest")
    prefix = prefix.resolve()
    experiment.task.quantization.pretrained_original_checkpoint = str(prefix)
    source = snapshot.read().get("snapshot_of", {})
    return {
        "parent": str(config.qat.parent),
        "checkpoint": {**source, "step": step},
        "float_checkpoint": str(prefix),
    }


def range_decay(steps: int) -> float:
    """The moving-average decay of the activation ranges for a QAT run of `steps` steps: like
    `norm_momentum: auto`, averaging over 1/30 of the run, within 0.9 .. 0.999 (tfmot's fixed)."""
    low, high = RANGE_DECAY_LIMITS
    return round(min(high, max(low, 1 - RANGE_RUN_FRACTION / steps)), 4)


@contextlib.contextmanager
def fitted_ranges(decay: float) -> Iterator[None]:
    """Train with activation ranges averaged at `decay`.

    TensorFlow Model Optimization's activation quantizers start every range at [-6, 6] and
    average it with a fixed decay of 0.999: about 3000 steps to forget that start, which Model
    Garden's COCO recipes have and a fine-tuning QAT run does not: a ReLU6 output's range would
    still begin near -6 where its true minimum is 0. The decay is an argument tfmot hard-codes,
    so it is set here, around the training loop (the graph is traced inside it).
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops  # type: ignore[import-untyped]

    original = quant_ops.MovingAvgQuantize

    def averaged(*args: Any, **kwargs: Any) -> Any:
        kwargs["ema_decay"] = decay
        return original(*args, **kwargs)

    quant_ops.MovingAvgQuantize = averaged
    try:
        yield
    finally:
        quant_ops.MovingAvgQuantize = original


def _snapshot(parent: RunDir, which: str, snapshot: RunDir) -> None:
    step, prefix, chosen = pick_checkpoint(parent, which)
    state = parent.read()
    if "plan" not in state or not (parent.path / EXPERIMENT_YAML).is_file():
        raise TfodError("the parent run has no experiment.yaml: it never trained", parent.path)
    with atomic.atomic_directory(snapshot.path) as tmp:
        copy_checkpoint(prefix, tmp)
        for name in (CONFIG_COPY, EXPERIMENT_YAML):
            shutil.copy2(parent.path / name, tmp / name)
        origin = {"which": chosen, "step": step, "path": str(prefix)}
        kept = {k: state[k] for k in ("name", "plan") if k in state}
        atomic.write_json(tmp / RUN_JSON, {**kept, "snapshot_of": origin, "status": "snapshot"})
