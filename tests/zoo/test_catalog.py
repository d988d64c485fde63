"""Each zoo entry's preset builds a model whose checkpoint layout (every variable's object-graph
path and shape) is the one the published checkpoint was saved from.

The reference for each is Model Garden's own config of that checkpoint, built by Model Garden:
- retinanet-mobilenetv2-256-coco(-qat): the model section of
  `official/projects/qat/vision/configs/experiments/retinanet/coco_mobilenetv2_qat_tpu_e2e.yaml`
  (tensorflow/models), on the registered `retinanet_mobile_coco`;
- retinanet-spinenet49-mobile-384-coco: the registered `retinanet_mobile_coco` as it is (its
  `coco_spinenet49_mobile_tpu.yaml`);
- retinanet-resnet50-fpn-640-coco and resnet50-imagenet: the registered `retinanet_resnetfpn_coco`.
Both models are saved with random weights and their `tf.train.list_variables` compared: the keys
are object-graph paths, exactly what a restore matches on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import smoke_config
from tfod.config.experiment import build_experiment, make_plan
from tfod.config.presets import PRESETS
from tfod.zoo.catalog import KERAS, ZOO

COCO_CLASSES = 91  # Model Garden's COCO heads: 90 ids + background

# From coco_mobilenetv2_qat_tpu_e2e.yaml, `task.model` (training-only fields left out).
MOBILENETV2_SSD_256 = {
    "anchor": {"anchor_size": 3, "aspect_ratios": [0.5, 1.0, 2.0], "num_scales": 3},
    "backbone": {"mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": 1.0}, "type": "mobilenet"},
    "decoder": {"type": "fpn", "fpn": {"num_filters": 128, "use_separable_conv": True, "use_keras_layer": True}},
    "head": {"num_convs": 4, "num_filters": 128, "use_separable_conv": True},
    "input_size": [256, 256, 3],
    "max_level": 7,
    "min_level": 3,
    "norm_activation": {"activation": "relu6", "norm_epsilon": 0.001, "norm_momentum": 0.99, "use_sync_bn": False},
}  # fmt: skip

REFERENCES: dict[str, tuple[str, dict[str, Any]]] = {
    "retinanet-mobilenetv2-ssd-256": ("retinanet_mobile_coco", MOBILENETV2_SSD_256),
    "retinanet-spinenet49-mobile-384": ("retinanet_mobile_coco", {}),
    "retinanet-resnet50-fpn-640": ("retinanet_resnetfpn_coco", {}),
}


def _layout(experiment: Any, folder: Path) -> list[tuple[str, list[int]]]:
    import tensorflow as tf
    from official.vision.tasks import retinanet

    model = retinanet.RetinaNetTask(experiment.task).build_model()
    prefix = tf.train.Checkpoint(model=model, **model.checkpoint_items).write(str(folder / "ckpt"))
    return sorted(
        (name, shape)
        for name, shape in tf.train.list_variables(prefix)
        if "_CHECKPOINTABLE" not in name
    )


def test_every_entry_names_a_real_preset_with_a_reference() -> None:
    for entry in ZOO.values():
        # A Keras entry's checkpoint is written by tfod's conversion (test_keras_weights.py).
        assert entry.preset in PRESETS, entry.name
        assert entry.preset in REFERENCES or entry.kind == "keras-h5", entry.name
        assert entry.restores in ("detector", "backbone")
        assert entry.kind in ("tar.gz", "prefix", "keras-h5")
        assert (
            (entry.kind == "keras-h5") == (entry.keras is not None) == entry.url.startswith(KERAS)
        )


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(REFERENCES))
def test_the_preset_builds_the_published_checkpoint_layout(preset: str, tmp_path: Path) -> None:
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401

    name, model = REFERENCES[preset]
    reference = exp_factory.get_exp_config(name)
    reference.override({"task": {"model": {**model, "num_classes": COCO_CLASSES}}}, is_strict=True)

    config = smoke_config(tmp_path / "data", model={"preset": preset})
    summary = {"classes": [{"id": i} for i in range(1, COCO_CLASSES)], "splits": {}}
    ours = build_experiment(config, make_plan(config, summary, batch_size=8, steps=1000))

    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    mine, theirs = _layout(ours, tmp_path / "ours"), _layout(reference, tmp_path / "theirs")
    assert len(mine) > 100
    assert mine == theirs
