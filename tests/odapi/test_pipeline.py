"""`tfod import pipeline`: API configs of every style become the tfod.yaml and table expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.odapi.api_records import write_api_dataset
from tfod.cli import app
from tfod.config.experiment import build_experiment, make_plan
from tfod.config.schema import load_config
from tfod.data.demo import write_scenes
from tfod.errors import TfodError
from tfod.odapi.mapper import APPROXIMATED, MAPPED, TO_DO, UNSUPPORTED
from tfod.odapi.pipeline import PipelineImport, import_pipeline
from tfod.odapi.textproto import leaves, parse_pipeline

CONFIGS = Path(__file__).parent / "configs"
FPNLITE = {"task": {"model": {"anchor": {"aspect_ratios": [1.0, 2.0, 0.5], "num_scales": 2, "anchor_size": 4.0}}}}  # fmt: skip
SSD_ANCHORS = {"task": {"model": {"anchor": {"aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333]}}}}
RMSPROP = {
    "optimizer": {"type": "rmsprop", "rmsprop": {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0}},
    "learning_rate": {
        "type": "exponential",
        "exponential": {
            "initial_learning_rate": 0.004, "decay_steps": 800720, "decay_rate": 0.95,
            "staircase": True,
        },
    },
}  # fmt: skip

# config file -> (the tfod.yaml's model, train and eval sections and overrides, {field: status})
EXPECTED: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "ssd_mobilenet_v1_coco": (
        {
            "model": {
                "preset": "retinanet-mobilenetv2-ssd-256",
                "init_checkpoint": "zoo:retinanet-mobilenetv2-256-coco",
                "init_modules": "backbone+decoder",
            },
            "train": {
                "batch_size": 24, "steps": 200000, "learning_rate": 0.004,
                "augment": ["hflip", "scale_jitter"],
            },
            "overrides": {**SSD_ANCHORS, "trainer": {"optimizer_config": RMSPROP}},
        },
        {
            "model.ssd.feature_extractor.type": APPROXIMATED,
            "model.ssd.image_resizer": APPROXIMATED,
            "model.ssd.anchor_generator.ssd_anchor_generator": APPROXIMATED,
            "model.ssd.loss": APPROXIMATED,
            "train_config.batch_size": MAPPED,
            "train_config.optimizer.rms_prop_optimizer": MAPPED,
            "train_config.data_augmentation_options[0]": MAPPED,
            "train_config.data_augmentation_options[1].ssd_random_crop": APPROXIMATED,
            "train_config.fine_tune_checkpoint": APPROXIMATED,
            "train_input_reader.tf_record_input_reader.input_path[0]": TO_DO,
            "train_input_reader.label_map_path": TO_DO,
            "eval_config.num_examples": APPROXIMATED,
            "eval_config.max_evals": UNSUPPORTED,
        },
    ),
    "ssd_mobilenet_v1_fpn_640x640": (
        {
            "model": {
                "preset": "retinanet-mobilenetv2-ssd-256",
                "init_checkpoint": "zoo:retinanet-mobilenetv2-256-coco",
                "init_modules": "backbone+decoder",
            },
            "train": {
                "batch_size": 24, "steps": 200000, "learning_rate": 0.002,
                "warmup_steps": 900000, "augment": ["hflip", "scale_jitter"],
            },
            "overrides": {
                **FPNLITE,
                "trainer": {"optimizer_config": {"learning_rate": {
                    "type": "stepwise",
                    "stepwise": {"boundaries": [900000, 1200000], "values": [0.002, 0.0002, 2e-05]},
                }}},
            },
        },
        {
            "model.ssd.feature_extractor.fpn.min_level": MAPPED,
            "model.ssd.feature_extractor.fpn.max_level": MAPPED,
            "model.ssd.anchor_generator.multiscale_anchor_generator.scales_per_octave": MAPPED,
            "train_config.optimizer.momentum_optimizer.learning_rate.manual_step_learning_rate": MAPPED,
            "train_config.optimizer.use_moving_average": UNSUPPORTED,
        },
    ),
    "ssd_mobilenet_v1_quantized_300x300": (
        {
            "model": {
                "preset": "retinanet-mobilenetv2-ssd-256",
                "init_checkpoint": "zoo:retinanet-mobilenetv2-256-coco",
                "init_modules": "backbone+decoder",
            },
            "train": {
                "batch_size": 24, "steps": 48000, "learning_rate": 0.004,
                "augment": ["hflip", "scale_jitter"],
            },
            "overrides": {**SSD_ANCHORS, "trainer": {"optimizer_config": RMSPROP}},
        },
        {
            "graph_rewriter.quantization.delay": MAPPED,
            "graph_rewriter.quantization.weight_bits": MAPPED,
            "graph_rewriter.quantization.activation_bits": MAPPED,
            "train_config.num_steps": MAPPED,
        },
    ),
    "ssd_mobilenet_v1_fpn_quantized_640x640": (
        {
            "model": {
                "preset": "retinanet-mobilenetv2-ssd-256",
                "init_checkpoint": "zoo:retinanet-mobilenetv2-256-coco",
                "init_modules": "backbone+decoder",
            },
            "train": {
                "batch_size": 24, "steps": 48000, "learning_rate": 0.002,
                "warmup_steps": 900000, "augment": ["hflip", "scale_jitter"],
            },
        },
        {"graph_rewriter.quantization.delay": MAPPED, "model.ssd.feature_extractor.fpn.max_level": MAPPED},
    ),
    "ssd_mobilenet_v2_fpnlite_320x320": (
        {
            "model": {
                "preset": "retinanet-mobilenetv2-ssd-256",
                "init_checkpoint": "zoo:retinanet-mobilenetv2-256-coco",
                "init_modules": "backbone",
            },
            "train": {
                "batch_size": 128, "steps": 50000, "learning_rate": 0.08, "warmup_steps": 1000,
                "augment": ["hflip", "scale_jitter"],
            },
            "eval": {"metric": "AP"},
            "overrides": FPNLITE,
        },
        {
            "model.ssd.feature_extractor.type": MAPPED,
            "model.ssd.feature_extractor.fpn": APPROXIMATED,
            "model.ssd.image_resizer": APPROXIMATED,
            "train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate.total_steps": MAPPED,
            "train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate.warmup_learning_rate": APPROXIMATED,
            "train_config.fine_tune_checkpoint_version": APPROXIMATED,
            "eval_config.metrics_set": MAPPED,
            "eval_config.use_moving_averages": UNSUPPORTED,
            "eval_input_reader[0].shuffle": APPROXIMATED,
        },
    ),
    "ssd_resnet50_v1_fpn_640x640": (
        {
            "model": {
                "preset": "retinanet-resnet50-fpn-640",
                "init_checkpoint": "zoo:retinanet-resnet50-fpn-640-coco",
                "init_modules": "backbone+decoder",
            },
            "train": {
                "batch_size": 64, "steps": 50000, "learning_rate": 0.04, "warmup_steps": 1000,
                "augment": ["hflip", "scale_jitter"],
            },
            "overrides": FPNLITE,
        },
        {"model.ssd.feature_extractor.type": MAPPED, "model.ssd.image_resizer": MAPPED},
    ),
    "efficientdet_d0_512x512": (
        {
            "model": {
                "preset": "retinanet-spinenet49-mobile-384",
                "init_checkpoint": "zoo:retinanet-spinenet49-mobile-384-coco",
                "init_modules": "backbone",
            },
            "train": {
                "batch_size": 128, "steps": 300000, "learning_rate": 0.08, "warmup_steps": 2500,
                "augment": ["hflip", "scale_jitter"],
            },
            "eval": {"metric": "AP", "batch_size": 1},
        },
        {
            "model.ssd.feature_extractor.type": APPROXIMATED,
            "model.ssd.feature_extractor.bifpn": APPROXIMATED,
            "model.ssd.image_resizer": APPROXIMATED,
            "train_config.data_augmentation_options[1].random_scale_crop_and_pad_to_square": APPROXIMATED,
            "train_config.use_bfloat16": UNSUPPORTED,
        },
    ),
    "faster_rcnn_resnet50_v1_640x640": (
        {
            "model": {
                "preset": "fasterrcnn-resnet50-fpn-640",
                "init_checkpoint": "zoo:resnet50-imagenet",
                "init_modules": "backbone",
            },
            "train": {
                "batch_size": 64, "steps": 25000, "learning_rate": 0.04, "warmup_steps": 2000,
                "augment": ["hflip"],
            },
            "overrides": {},
        },
        {
            "model.faster_rcnn.feature_extractor.type": APPROXIMATED,  # no FPN in the file's
            "model.faster_rcnn.first_stage_anchor_generator": APPROXIMATED,
            "model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor.use_dropout": (
                APPROXIMATED
            ),
            "model.faster_rcnn.image_resizer": MAPPED,
        },
    ),
    "unknown_fields": (
        {
            "model": {"preset": "retinanet-mobilenetv2-256"},
            "train": {"batch_size": 8, "steps": 400, "learning_rate": 0.001, "augment": ["scale_jitter"]},
            "eval": {"metric": "AP50"},
            "overrides": {"trainer": {"optimizer_config": {
                "optimizer": {"type": "adam"},
                "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.001}},
            }}},
        },
        {
            "model.ssd.feature_extractor.my_experimental_width": APPROXIMATED,
            "model.ssd.experimental_head_flavour": APPROXIMATED,
            "train_config.frobnicate": UNSUPPORTED,
            "train_config.gradient_clipping_by_norm": UNSUPPORTED,
            "train_config.data_augmentation_options[0].random_vertical_flip": UNSUPPORTED,
            "train_config.data_augmentation_options[1].random_adjust_brightness": UNSUPPORTED,
            "train_config.data_augmentation_options[2]": APPROXIMATED,
            "eval_config.metrics_set": APPROXIMATED,
            "eval_input_reader[1]": UNSUPPORTED,
            "train_input_reader.label_map_path": TO_DO,
        },
    ),
}  # fmt: skip


def _import(name: str, tmp_path: Path, **kwargs: Any) -> PipelineImport:
    return import_pipeline(
        CONFIGS / f"{name}.config", tmp_path / "tfod.yaml", progress=False, **kwargs
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_becomes_the_expected_yaml_and_table(name: str, tmp_path: Path) -> None:
    expected_yaml, expected_rows = EXPECTED[name]
    result = _import(name, tmp_path)
    written = yaml.safe_load((tmp_path / "tfod.yaml").read_text())
    assert written["name"] == name
    assert written["data"] == {"dir": f"data/{name}"}
    for section, values in expected_yaml.items():
        assert written.get(section, {}) == values, section
    config = load_config(tmp_path / "tfod.yaml")  # valid for tfod, and for Model Garden:
    summary = {"classes": [{"id": 1, "name": "a"}], "splits": {"train": {"images": 10}}}
    experiment = build_experiment(config, make_plan(config, summary))
    if "overrides" in expected_yaml and "trainer" in expected_yaml["overrides"]:
        optimizer = expected_yaml["overrides"]["trainer"]["optimizer_config"]
        for part in ("optimizer", "learning_rate"):
            if part in optimizer:
                assert (
                    getattr(experiment.trainer.optimizer_config, part).type
                    == optimizer[part]["type"]
                )
    statuses = {row.field: row.status for row in result.rows}
    for field, status in expected_rows.items():
        assert statuses.get(field) == status, (field, statuses.get(field))
    assert result.dataset is None  # placeholders or relative paths: nothing to import here
    assert "tfod data import-tfrecord" in result.next_steps[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_field_of_the_file_has_a_row(name: str, tmp_path: Path) -> None:
    config, unknown = parse_pipeline(CONFIGS / f"{name}.config")
    rows = _import(name, tmp_path).rows
    fields = [row.field for row in rows]
    for path in leaves(config):  # a row for it, for what holds it or for what it holds
        assert any(
            path == f
            or path.startswith((f + ".", f + "["))
            or f.startswith((path + ".", path + "["))
            for f in fields
        ), path
    for item in unknown:
        row = next(r for r in rows if r.field == item.path)
        assert f"line {item.line}" in row.why
    assert all(row.why or row.became for row in rows)


def test_quantization_becomes_float_steps_then_tfod_qat(tmp_path: Path) -> None:
    result = _import("ssd_mobilenet_v1_quantized_300x300", tmp_path)
    assert f"tfod qat runs/{result.name} --steps 2000" in result.next_steps
    assert result.next_steps[-1] == f"tfod export runs/{result.name}-qat"
    assert "tfod qat runs/ssd_mobilenet_v1_quantized_300x300 --steps 2000" in result.yaml_text


def test_a_faster_rcnn_config_becomes_a_faster_rcnn(tmp_path: Path) -> None:
    result = _import("faster_rcnn_resnet50_v1_640x640", tmp_path)
    rows = {r.field: r for r in result.rows}
    row = rows["model.faster_rcnn.feature_extractor.type"]
    assert row.became == "model.preset: fasterrcnn-resnet50-fpn-640"
    assert "Model Garden's Faster R-CNN" in row.why and "feature pyramid" in row.why
    assert load_config(tmp_path / "tfod.yaml").model.preset == "fasterrcnn-resnet50-fpn-640"


def test_a_mask_rcnn_config_becomes_tfods_mask_rcnn(tmp_path: Path) -> None:
    text = (CONFIGS / "faster_rcnn_resnet50_v1_640x640.config").read_text()
    assert "mask_rcnn_box_predictor {" in text
    masks = text.replace(
        "mask_rcnn_box_predictor {",
        "mask_rcnn_box_predictor {\n        predict_instance_masks: true\n"
        "        mask_height: 33\n        mask_width: 33",
    )
    (tmp_path / "mask_rcnn.config").write_text(masks)
    result = import_pipeline(tmp_path / "mask_rcnn.config", tmp_path / "tfod.yaml", progress=False)
    rows = {r.field: r for r in result.rows}
    predictor = "model.faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor"
    row = rows[f"{predictor}.predict_instance_masks"]
    assert row.status == MAPPED and "image/object/mask" in row.why
    assert rows[f"{predictor}.mask_height"].status == APPROXIMATED
    assert "Model Garden's mask head" in rows[f"{predictor}.mask_height"].why
    assert "Model Garden's Mask R-CNN" in rows["model.faster_rcnn.feature_extractor.type"].why
    assert load_config(tmp_path / "tfod.yaml").model.preset == "maskrcnn-resnet50-fpn-640"

    boxes_only = import_pipeline(
        tmp_path / "mask_rcnn.config", tmp_path / "boxes.yaml", preset="fasterrcnn-resnet50-fpn-640",
        progress=False,
    )  # fmt: skip
    row = {r.field: r for r in boxes_only.rows}[f"{predictor}.predict_instance_masks"]
    assert row.status == UNSUPPORTED and "trains boxes alone" in row.why


def test_placeholders_and_a_300px_fpn_are_explained(tmp_path: Path) -> None:
    rows = {r.field: r for r in _import("ssd_mobilenet_v1_coco", tmp_path).rows}
    assert "PATH_TO_BE_CONFIGURED" in rows["train_input_reader.label_map_path"].why
    assert "20 and 19" in rows["model.ssd.image_resizer"].why


def test_malformed_config_is_an_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.config"
    bad.write_text("model {\n  ssd {\n    num_classes: three\n  }\n}\n")
    with pytest.raises(TfodError, match="3:"):
        parse_pipeline(bad)
    result = CliRunner().invoke(
        app, ["import", "pipeline", str(bad), "--out", str(tmp_path / "t.yaml")]
    )
    assert result.exit_code != 0 and isinstance(result.exception, TfodError)
    assert not (tmp_path / "t.yaml").exists()


def test_existing_yaml_is_kept_without_force(tmp_path: Path) -> None:
    (tmp_path / "tfod.yaml").write_text("mine\n")
    with pytest.raises(TfodError, match="--force"):
        _import("unknown_fields", tmp_path)
    assert (tmp_path / "tfod.yaml").read_text() == "mine\n"


def test_import_then_train_on_the_imported_records(tmp_path: Path) -> None:
    """A user's API folder (records under annotations/, relative paths) -> tfod train."""
    from tfod.train.trainer import train

    project = tmp_path / "api-project"
    source = tmp_path / "scenes"
    write_scenes(source, 16, np.random.default_rng(5))
    val_files = {f"images/{i:05d}.jpg" for i in range(13, 17)}
    write_api_dataset(source, project / "annotations", val_files, shards=1)
    text = (CONFIGS / "unknown_fields.config").read_text()
    text = text.replace("num_steps: 400", "num_steps: 4").replace("batch_size: 8", "batch_size: 4")
    text = text.replace("num_classes: 2", "num_classes: 3")
    for split in ("train", "test"):
        target = "train" if split == "train" else "val"
        text = text.replace(
            f"annotations/{split}.record", f"annotations/{target}.record-00000-of-00001"
        )
    (project / "training").mkdir()
    config = project / "training" / "pipeline.config"
    config.write_text(text)  # relative paths: from the project folder, as the API was run there

    out = tmp_path / "tfod" / "tfod.yaml"
    args = [
        "import",
        "pipeline",
        str(config),
        "--out",
        str(out),
        "--preset",
        "retinanet-mobilenetv2-256-smoke",
    ]
    result = CliRunner().invoke(app, args)  # relative to the config's folder: not found there
    assert result.exit_code == 0, result.output
    assert "to do" in result.output and "--paths-from" in result.output
    assert not (tmp_path / "tfod" / "data").exists()
    result = CliRunner().invoke(app, [*args, "--paths-from", str(project), "--force"])
    assert result.exit_code == 0, result.output
    assert "12 train / 4 val images" in result.output
    dataset = json.loads((tmp_path / "tfod" / "data" / "pipeline" / "dataset.json").read_text())
    assert dataset["source"]["mode"] == "reference"
    run = train(load_config(out), tmp_path / "runs", progress=False)
    assert run.status == "finished"
    assert run.last_eval is not None


def test_quantization_of_a_preset_without_qat_is_unsupported(tmp_path: Path) -> None:
    config = tmp_path / "resnet_quantized.config"
    rewriter = "graph_rewriter { quantization { delay: 40000 weight_bits: 8 activation_bits: 8 } }"
    text = (CONFIGS / "ssd_resnet50_v1_fpn_640x640.config").read_text()
    config.write_text(text + rewriter + "\n")
    rows = import_pipeline(config, tmp_path / "tfod.yaml", progress=False).rows
    unsupported = [
        r.why for r in rows if r.field == "graph_rewriter.quantization" and r.status == UNSUPPORTED
    ]
    assert unsupported and "`tfod qat` supports retinanet-mobilenetv2-ssd-256" in unsupported[0]
