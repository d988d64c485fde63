"""Each pre-flight check fires on the input it exists for, with a message naming field and fix."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import smoke_config
from tfod.config.experiment import build_experiment, make_plan
from tfod.config.schema import TfodConfig, load_config
from tfod.data.dataset import load_summary
from tfod.errors import TfodError
from tfod.train.preflight import Finding, run_checks


def _findings(config: TfodConfig) -> list[Finding]:
    summary = load_summary(config.data.dir)
    plan = make_plan(config, summary)
    return run_checks(config, plan, summary, build_experiment(config, plan))


def _only(findings: list[Finding], severity: str = "error") -> Finding:
    matching = [f for f in findings if f.severity == severity]
    assert len(matching) == 1, findings
    return matching[0]


def test_a_sound_config_passes(demo_data: Path) -> None:
    assert _findings(smoke_config(demo_data, train={"batch_size": 8})) == []


def test_small_batch_with_batch_norm_warns_and_offers_the_fixes(demo_data: Path) -> None:
    finding = _only(_findings(smoke_config(demo_data, train={"batch_size": 4})), "warning")
    assert finding.field == "train.batch_size" and "4 images per replica" in finding.message
    assert "freeze_backbone" in finding.message and "use_sync_bn" in finding.message
    synced = {"task": {"model": {"norm_activation": {"use_sync_bn": True}}}}
    assert _findings(smoke_config(demo_data, train={"batch_size": 4}, overrides=synced)) == []


def test_input_size_not_a_multiple_of_the_coarsest_level(demo_data: Path) -> None:
    config = smoke_config(demo_data, overrides={"task": {"model": {"input_size": [80, 80, 3]}}})
    finding = _only(_findings(config))
    assert finding.field == "overrides.task.model.input_size"
    assert "not a multiple of 2^max_level = 32" in finding.message
    assert "Use 64 or 96" in finding.message and "20 and 19" in finding.message


def test_num_classes_disagreeing_with_the_label_map(demo_data: Path) -> None:
    config = smoke_config(demo_data, overrides={"task": {"model": {"num_classes": 3}}})
    finding = _only(_findings(config))
    assert "3 classes + background = 4" in finding.message


def test_batch_larger_than_the_training_split(demo_data: Path) -> None:
    finding = _only(_findings(smoke_config(demo_data, train={"batch_size": 64})))
    assert finding.field == "train.batch_size" and "training images" in finding.message


def test_learning_rate_far_above_the_linear_rule_is_an_error(demo_data: Path) -> None:
    finding = _only(_findings(smoke_config(demo_data, train={"learning_rate": 0.5})))
    assert finding.field == "train.learning_rate" and "diverge" in finding.message
    assert (
        "linear-scaling rule gives 0.005 for the global batch 4" in finding.message
    )  # and a BN warning


def test_learning_rate_far_below_the_rule_is_a_warning(demo_data: Path) -> None:
    findings = _findings(smoke_config(demo_data, train={"learning_rate": 0.0001, "batch_size": 8}))
    assert _only(findings, "warning").field == "train.learning_rate"
    assert not [f for f in findings if f.severity == "error"]


def test_batch_norm_too_slow_for_the_run(demo_data: Path) -> None:
    config = smoke_config(demo_data, train={"steps": 300, "norm_momentum": 0.99})
    finding = _only(_findings(config))
    assert finding.field == "train.norm_momentum"
    assert "~100 steps" in finding.message and "AP 0.0" in finding.message
    assert "at least 1000 steps" in finding.message
    auto = _findings(smoke_config(demo_data, train={"steps": 300}))  # auto picks 0.9
    assert not [f for f in auto if f.severity == "error"]


def test_missing_checkpoint(demo_data: Path, tmp_path: Path) -> None:
    config = smoke_config(demo_data, model={"init_checkpoint": str(tmp_path / "nope")})
    finding = _only(_findings(config))
    assert finding.field == "model.init_checkpoint" and "checkpoint not found" in finding.message


def test_checkpoint_without_the_requested_modules(demo_data: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    prefix = tf.train.Checkpoint(classifier=tf.Variable([1.0])).write(str(tmp_path / "other"))
    config = smoke_config(demo_data, model={"init_checkpoint": prefix})
    finding = _only(_findings(config))
    assert "none of the requested modules (backbone)" in finding.message
    assert "'backbone/'" in finding.message and "classifier" in finding.message


def test_missing_label_map_and_shards(demo_data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(demo_data, broken)
    (broken / "label_map.pbtxt").unlink()
    next(broken.glob("val-*.tfrecord")).unlink()
    messages = [f.message for f in _findings(smoke_config(broken)) if f.severity == "error"]
    assert any("label_map.pbtxt is missing" in m for m in messages)
    assert any("val shards missing" in m for m in messages)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(TfodError, match="dataset folder does not exist"):
        _findings(smoke_config(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x"}, "data: Field required"),
        (
            {"name": "x", "data": {"dir": "d"}, "train": {"steps": 0}},
            "train.steps: Input should be greater than 0",
        ),
        (
            {"name": "x", "data": {"dir": "d"}, "train": {"stpes": 5}},
            "train.stpes: Extra inputs are not permitted",
        ),
        ({"name": "bad name!", "data": {"dir": "d"}}, "name: String should match pattern"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_schema_errors_name_the_field(tmp_path: Path, raw: Any, message: str) -> None:
    import yaml

    path = tmp_path / "tfod.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TfodError, match=message.replace("(", r"\(")):
        load_config(path)


def test_unknown_model_garden_override_is_named(demo_data: Path) -> None:
    config = smoke_config(demo_data, overrides={"task": {"model": {"no_such_field": 1}}})
    with pytest.raises(TfodError, match=r"overrides.*no_such_field"):
        _findings(config)


def test_unknown_preset(demo_data: Path) -> None:
    with pytest.raises(TfodError, match="unknown preset 'yolo'"):
        _findings(smoke_config(demo_data, model={"preset": "yolo"}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"train": {"images": 0}, "val": {"images": 0}}, "holds no images; convert a source"),
        ({"train": {"boxes": 0}}, "the train split of .* has no boxes"),
        ({"val": {"images": 0}}, r"the val split .* has no images \(all are in train\)"),
    ],
    ids=["no-images", "no-boxes", "no-val-images"],
)
def test_a_dataset_without_images_or_boxes_is_an_error_with_the_right_advice(
    demo_data: Path, tmp_path: Path, edit: dict[str, dict[str, int]], message: str
) -> None:
    """Datasets of older tfod versions, or edited by hand: convert itself now refuses them."""
    import json
    import re

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    summary = json.loads((data / "dataset.json").read_text())
    for split, fields in edit.items():
        summary["splits"][split].update(fields)
    (data / "dataset.json").write_text(json.dumps(summary))
    errors = [f.message for f in _findings(smoke_config(data)) if f.severity == "error"]
    assert any(re.search(message, m) for m in errors), errors
    assert not any("use at most 0" in m for m in errors)


# --- every value is checked wherever it came from: the resolved experiment, after overrides ----
@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"task": {"model": {"input_size": [100000, 100000, 3]}}}, "overrides.task.model.input_size", "100000x100000 is outside 32..4096"),
        ({"task": {"train_data": {"input_path": "/etc/passwd"}}}, "overrides.task.train_data.input_path", "/etc/passwd is not a TFRecord file"),
        ({"task": {"validation_data": {"input_path": "/nowhere/*.tfrecord"}}}, "overrides.task.validation_data.input_path", "matches no file"),
        ({"task": {"train_data": {"input_path": "/dev/zero"}}}, "overrides.task.train_data.input_path", "/dev/zero is not a regular file"),
        ({"task": {"init_checkpoint": "/etc/passwd"}}, "overrides.task.init_checkpoint", "checkpoint not found"),
        ({"trainer": {"max_to_keep": 0}}, "overrides.trainer.max_to_keep", "0 must be a whole number of at least 1"),
        ({"trainer": {"steps_per_loop": 0}}, "overrides.trainer.steps_per_loop", "0 must be a whole number"),
        ({"trainer": {"checkpoint_interval": -1}}, "overrides.trainer.checkpoint_interval", "-1 must be"),
        ({"trainer": {"summary_interval": 0}}, "overrides.trainer.summary_interval", "0 must be a positive multiple of steps_per_loop"),
    ],
)  # fmt: skip
def test_overridden_values_pass_the_same_checks(
    demo_data: Path, overrides: dict[str, Any], field: str, message: str
) -> None:
    config = smoke_config(demo_data, train={"batch_size": 8}, overrides=overrides)
    errors = [f for f in _findings(config) if f.severity == "error"]
    assert [f.field for f in errors] == [field], errors
    assert message in errors[0].message


@pytest.mark.parametrize(
    "raw",
    [
        {"train": {"learning_rate": float("nan")}},
        {"train": {"learning_rate": float("inf")}},
        {"train": {"learning_rate": 1e308}},
        {"overrides": {"task": {"losses": {"l2_weight_decay": float("nan")}}}},
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    import yaml

    path = tmp_path / "tfod.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"dir": "d"}, **raw}))
    with pytest.raises(TfodError, match="invalid settings") as info:
        load_config(path)
    assert "finite" in str(info.value) or "less than or equal to 10" in str(info.value)


def test_an_ftp_checkpoint_is_named_once_with_what_is_fetched(demo_data: Path) -> None:
    config = smoke_config(
        demo_data, train={"batch_size": 8}, model={"init_checkpoint": "ftp://h/ckpt-1"}
    )
    finding = _only(_findings(config))
    assert (
        finding.field == "model.init_checkpoint" and "model.init_checkpoint" not in finding.message
    )
    assert finding.message.startswith("ftp://h/ckpt-1: only zoo:NAME, https://, http:// and gs://")


def test_yolo_anchor_boxes_that_match_no_box_warn_with_the_fix(
    demo_data: Path, lines_data: Path
) -> None:
    yolo = {"preset": "yolov7-tiny-416-smoke"}
    assert _findings(smoke_config(demo_data, model=yolo, train={"batch_size": 8})) == []
    finding = _only(
        _findings(smoke_config(lines_data, model=yolo, train={"batch_size": 8})), "warning"
    )
    assert finding.field == "overrides.task.model.anchor_boxes"
    assert finding.message.startswith("100% of the training boxes have no anchor box with both")
    assert "fitted to the boxes match 100%" in finding.message
    assert f"tfod init --data {lines_data} --preset yolov7-tiny-416-smoke" in finding.message


def test_yolo_anchor_warning_offers_tfod_init_only_when_it_would_write_anchors(
    lines_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfod.config import anchors

    fit = anchors.fit_yolo_anchors

    def no_better(sizes: Any, given: Any) -> Any:
        preset, _ = fit(sizes, given)
        return preset, preset  # fitting finds nothing better than the preset's anchors

    monkeypatch.setattr(anchors, "fit_yolo_anchors", no_better)
    yolo = {"preset": "yolov7-tiny-416-smoke"}
    config = smoke_config(lines_data, model=yolo, train={"batch_size": 8})
    finding = _only(_findings(config), "warning")
    assert finding.message.endswith("Anchor boxes fitted to the boxes match 0%, no more than these")
    assert "tfod init" not in finding.message


def test_mask_targets_finer_than_the_cropped_ground_truth_warn(demo_data: Path) -> None:
    mask_rcnn = {"preset": "maskrcnn-resnet50-fpn-640-smoke"}
    findings = _findings(smoke_config(demo_data, model=mask_rcnn, train={"batch_size": 8}))
    assert [f.field for f in findings] == ["model.preset"]  # the demo has no masks
    finer = {"task": {"model": {"mask_head": {"upsample_factor": 16}}}}  # 14 x 16 = 224 px
    config = smoke_config(demo_data, model=mask_rcnn, train={"batch_size": 8}, overrides=finer)
    finding = _only(_findings(config), "warning")
    assert finding.field == "overrides.task.train_data.parser.mask_crop_size"
    assert finding.message.startswith("112 px is below the mask targets' 224 px")
