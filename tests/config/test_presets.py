"""Every preset and its smoke twin resolves onto Model Garden and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import smoke_config
from tfod.config.experiment import build_experiment, make_plan
from tfod.config.presets import PRESETS, SMOKE_SUFFIX
from tfod.config.schema import TfodConfig
from tfod.data.dataset import load_summary

REAL = [name for name in PRESETS if not name.endswith(SMOKE_SUFFIX)]


def test_every_real_preset_has_a_smoke_twin() -> None:
    assert len(REAL) >= 4
    for name in REAL:
        assert name + SMOKE_SUFFIX in PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_resolves_and_validates(name: str, demo_data: Path) -> None:
    config = smoke_config(
        demo_data, model={"preset": name}, train={"steps": None, "batch_size": None}
    )
    plan = make_plan(config, load_summary(demo_data))
    experiment = build_experiment(config, plan)
    experiment.validate()
    task, preset = experiment.task, PRESETS[name]
    assert task.model.num_classes == 4  # 3 shapes + background
    assert task.model.input_size == [preset.input_size, preset.input_size, 3]
    assert preset.input_size % 2**task.model.max_level == 0
    assert task.init_checkpoint == ""  # never a remote (gs://) default
    assert task.annotation_file == str(demo_data / "val_coco.json")
    assert experiment.runtime.mixed_precision_dtype == "float32"  # not the TPU's bfloat16
    assert task.model.norm_activation.use_sync_bn is False
    assert task.train_data.dtype == "float32"
    assert task.validation_data.drop_remainder is False  # every validation image is evaluated
    if name.startswith("retinanet-mobilenetv2"):
        assert task.model.backbone.type == "mobilenet"
        assert task.model.backbone.mobilenet.model_id == "MobileNetV2"
        assert task.model.decoder.type == "fpn"


def test_auto_learning_rate_scales_by_the_square_root_below_the_reference_batch(
    demo_data: Path,
) -> None:
    from tfod.config.experiment import auto_rate
    from tfod.config.presets import get_preset

    preset = get_preset("retinanet-mobilenetv2-256")  # 0.32 at batch 256
    assert auto_rate(preset, 8) == pytest.approx(0.04)  # sqrt gives 0.057: capped at 4x 0.01
    assert auto_rate(preset, 64) == pytest.approx(0.16)  # sqrt: 2x the linear 0.08
    assert auto_rate(preset, 256) == pytest.approx(0.32)
    assert auto_rate(preset, 512) == pytest.approx(0.64)  # linear above the reference
    summary = load_summary(demo_data)
    plan = make_plan(smoke_config(demo_data, train={"batch_size": 4}), summary)
    assert plan.learning_rate == pytest.approx(4 * plan.linear_rule_learning_rate)
    assert 1 <= plan.warmup_steps <= plan.steps


def test_auto_bn_momentum_fits_the_run_length(demo_data: Path) -> None:
    summary = load_summary(demo_data)
    short = make_plan(smoke_config(demo_data, train={"steps": 300}), summary)
    long = make_plan(smoke_config(demo_data, train={"steps": 50000}), summary)
    assert short.norm_momentum == 0.9
    assert long.norm_momentum == 0.99


def test_overrides_reach_model_garden(demo_data: Path) -> None:
    config = smoke_config(demo_data, overrides={"task": {"model": {"head": {"num_convs": 3}}}})
    experiment = build_experiment(config, make_plan(config, load_summary(demo_data)))
    assert experiment.task.model.head.num_convs == 3


def test_init_writes_a_valid_commented_config(tmp_path: Path, demo_data: Path) -> None:
    import yaml

    from tfod.config.schema import load_config
    from tfod.config.template import write_template

    out = tmp_path / "tfod.yaml"
    write_template(out, demo_data, "retinanet-mobilenetv2-320", None, force=False)
    text = out.read_text()
    assert "# presets:" in text and "retinanet-resnet50-fpn-640" in text
    config = load_config(out)
    assert isinstance(config, TfodConfig)
    assert config.data.dir == demo_data.resolve()
    assert yaml.safe_load(text)["model"]["preset"] == "retinanet-mobilenetv2-320"


def test_init_chooses_the_preset_for_the_object_sizes(tmp_path: Path, demo_data: Path) -> None:
    import yaml

    from tfod.config.template import write_template

    out = tmp_path / "tfod.yaml"
    write_template(out, demo_data, None, None, force=False)  # shapes of 36-104 px in 256 px
    text = out.read_text()
    assert yaml.safe_load(text)["model"]["preset"] == "retinanet-mobilenetv2-256"
    assert "# chosen for your data: at 256 px, 9 in 10 of your objects are" in text
    assert yaml.safe_load(text)["overrides"] == {}  # COCO's anchors already fit these shapes


def test_init_fits_anchors_to_small_objects(tmp_path: Path) -> None:
    import numpy as np
    import yaml

    from tfod.config.schema import load_config
    from tfod.config.template import write_template
    from tfod.data.convert import ConvertOptions, convert
    from tfod.data.demo import Scenes, write_scenes

    small = Scenes(size=320, objects=(6, 12), sides=(10, 24), clutter=4)
    write_scenes(tmp_path / "src", 12, np.random.default_rng(0), scenes=small)
    data = tmp_path / "small"
    convert(tmp_path / "src", data, ConvertOptions(seed=0, progress=False))
    out = tmp_path / "tfod.yaml"
    write_template(out, data, None, None, force=False)
    text = out.read_text()
    raw = yaml.safe_load(text)
    assert raw["model"]["preset"] == "retinanet-mobilenetv2-320"
    assert "spinenet49-mobile-384 sees them larger" in text
    anchor = raw["overrides"]["task"]["model"]["anchor"]
    assert anchor["anchor_size"] < 3.0  # the mobile presets' own anchor size
    assert "have an anchor at IoU >= 0.5, against" in text
    config = load_config(out)
    experiment = build_experiment(config, make_plan(config, load_summary(data)))
    assert experiment.task.model.anchor.anchor_size == anchor["anchor_size"]


def test_init_fits_yolo_anchor_boxes_to_boxes_the_recipes_cannot_match(
    tmp_path: Path, lines_data: Path
) -> None:
    import numpy as np
    import yaml

    from tfod.config.anchors import training_box_sizes, yolo_score
    from tfod.config.schema import load_config
    from tfod.config.template import write_template
    from tfod.train.preflight import run_checks

    name = "yolov7-tiny-416" + SMOKE_SUFFIX
    out = tmp_path / "tfod.yaml"
    write_template(out, lines_data, name, None, force=False)
    text = out.read_text()
    assert "the boxes have an anchor YOLO can match them to (sides within 4x), against 0%" in text
    boxes = yaml.safe_load(text)["overrides"]["task"]["model"]["anchor_boxes"]["boxes"]
    assert len(boxes) == 9
    config = load_config(out)
    plan = make_plan(config, load_summary(lines_data))
    experiment = build_experiment(config, plan)
    anchors = [list(a.box) for a in experiment.task.model.anchor_boxes.boxes]
    assert anchors == [b["box"] for b in boxes]
    sizes = training_box_sizes(lines_data, PRESETS[name].input_size)
    recall, _ = yolo_score(sizes, np.asarray(anchors))
    assert recall == 1.0
    findings = run_checks(config, plan, load_summary(lines_data), experiment)
    assert not [f for f in findings if "anchor" in f.field], findings


def test_a_yolo_preset_learns_tfods_class_ids_with_its_anchors_scaled(demo_data: Path) -> None:
    from tfod.config.experiment import yolo_anchor_boxes

    name = "yolov7-tiny-416" + SMOKE_SUFFIX
    config = smoke_config(demo_data, model={"preset": name}, train={"augment": ["hflip"]})
    plan = make_plan(config, load_summary(demo_data))
    task = build_experiment(config, plan).task
    # The recipe's anchors are for 416 px: at 64 px they are 64/416 of that size.
    first = task.model.anchor_boxes.boxes[0].box
    assert first == yolo_anchor_boxes(PRESETS[name])[0] == [round(10 * 64 / 416, 2), 2.0]
    # YOLO's decoder would map ids 1..N as COCO's 91 onto 80 ones: tfod's ids are kept.
    for data in (task.train_data, task.validation_data):
        assert data.decoder.type == "simple_decoder"
        assert data.decoder.simple_decoder.coco91_to_80 is False
    assert task.train_data.parser.random_flip is True
    assert task.train_data.parser.aug_scale_min == 1.0  # no scale_jitter asked
    # Keras's batch-norm momentum (the recipe's 0.03 is PyTorch's convention for 0.97).
    assert task.model.norm_activation.norm_momentum == plan.norm_momentum >= 0.9
    assert task.model.detection_generator.max_boxes == 100


def test_a_summed_loss_keeps_its_rate_at_every_batch() -> None:
    """YOLO's loss is summed over the batch's images: its gradient grows with the batch already."""
    from tfod.config.experiment import auto_rate, linear_rule
    from tfod.config.presets import get_preset

    yolo = get_preset("yolov7-tiny-416")
    assert [auto_rate(yolo, b) for b in (2, 8, 64, 512)] == [0.01] * 4
    assert linear_rule(yolo, 8) == 0.01


@pytest.mark.parametrize("ema", [None, 0.99])
def test_a_yolo_run_averages_its_weights_only_when_asked(
    demo_data: Path, ema: float | None
) -> None:
    config = smoke_config(demo_data, model={"preset": "yolov7-tiny-416-smoke"}, train={"ema": ema})
    experiment = build_experiment(config, make_plan(config, load_summary(demo_data)))
    averages = experiment.trainer.optimizer_config.ema  # the recipe's is on
    assert (averages and averages.average_decay) == ema


def test_init_chooses_the_family_the_bench_measured_best_for_the_budget_and_target(
    tmp_path: Path, demo_data: Path
) -> None:
    import yaml

    from tfod.config.schema import load_config
    from tfod.config.template import FAMILY_BENCH, choose_family, write_template
    from tfod.errors import TfodError

    for minutes in {m.minutes for m in FAMILY_BENCH}:
        for target in ("phone", "server"):
            best, why = choose_family(minutes, target)
            fits = [
                m for m in FAMILY_BENCH
                if m.minutes == minutes and (target == "server" or m.tflite)
            ]  # fmt: skip
            assert best.ap == max(m.ap for m in fits) and best.minutes == minutes
            assert all(m.preset in why for m in FAMILY_BENCH if m.minutes == minutes)
    out = tmp_path / "tfod.yaml"
    with pytest.raises(TfodError, match="--target takes one of phone, server; got 'watch'"):
        write_template(out, demo_data, "yolov7-tiny-416" + SMOKE_SUFFIX, None,
                       force=False, target="watch")  # fmt: skip
    assert not out.exists()
    write_template(out, demo_data, None, None, force=False, time="5m", target="server")
    text = out.read_text()
    best, _ = choose_family(5, "server")
    assert "on 2 CPU cores for a server" in text
    config = load_config(out)
    assert config.train.time == "5m" and config.train.steps is None
    chosen = yaml.safe_load(text)["model"]["preset"]
    assert PRESETS[chosen].family == PRESETS[best.preset].family
