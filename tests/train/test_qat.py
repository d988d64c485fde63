"""`tfod qat`: a float run -> a QAT run (stop, resume) -> its int8 TFLite -> `verify`'s story."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import smoke_config
from tests.helpers import matched, run_tfod
from tfod.config.experiment import build_experiment, make_plan
from tfod.config.schema import QatSection
from tfod.data.dataset import load_summary
from tfod.errors import TfodError
from tfod.predict.models import TFLiteModel, checkpoint_model
from tfod.runs.rundir import PARENT, RunDir
from tfod.train.preflight import run_checks
from tfod.train.qat import qat_config

QAT_SMOKE = "retinanet-mobilenetv2-ssd-256-smoke"
AGREEMENT = 0.8
"""The QAT int8 TFLite finds at least this share of the fake-quantized checkpoint's boxes scoring
above 0.05 on the validation images (IoU >= 0.6, score within 0.15): the fake-quant graph and
TFLite's int8 kernels round differently, so a few weak boxes move."""
VALUE = ".ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def float_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float run of the QAT-capable smoke preset that has learnt something (150 steps)."""
    from tfod.data.demo import make_demo
    from tfod.train.trainer import train

    data = tmp_path_factory.mktemp("demo48") / "data"
    make_demo(data, n=48, progress=False)
    config = smoke_config(
        data,
        name="float",
        model={"preset": QAT_SMOKE},
        train={"steps": 150, "batch_size": 8, "learning_rate": 0.04},
        eval={"every_steps": 150, "batch_size": 8},
    )
    result = train(config, tmp_path_factory.mktemp("runs"), progress=False)
    assert result.status == "finished"
    # Detections to compare, not accuracy: 150 steps from scratch is barely trained, and its AP
    # varies with the run (0.012 in one CI run, above 0.02 in others).
    assert result.last_eval is not None and result.last_eval["metrics"]["AP"] > 0.005
    return result.run.path


@pytest.fixture(scope="module")
def qat_run(float_parent: Path) -> Path:
    """`tfod qat` for 10 steps, then resumed by the same call with more steps; then exported.
    (Stopping a run by SIGTERM and resuming it is tests/robustness/test_faults.py's: `qat` trains
    through the same trainer.)"""
    from tfod.api import qat
    from tfod.export.exporter import export

    said = io.StringIO()
    with contextlib.redirect_stderr(said):  # tfod's console writes to the stderr of the moment
        first = qat(float_parent, steps=10, eval=False)
    assert first.status == "finished" and first.step == 10
    assert "Quantization-aware training of" in said.getvalue(), said.getvalue()
    run = RunDir(first.run.path)
    assert run.path == float_parent.parent / "float-qat" and 10 in run.checkpoints()
    second = qat(float_parent, steps=30)
    assert second.status == "finished" and second.step == 30
    assert [s["start_step"] for s in run.read()["sessions"]] == [0, 10]
    export(run, formats=["tflite"], calibration_images=16)  # what the QAT tests read
    return run.path


def test_unsupported_preset_gets_the_preflight_error(smoke_run: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TfodError) as caught:
        qat_config(RunDir(smoke_run))
    assert "retinanet-mobilenetv2-ssd-256, retinanet-spinenet49-mobile-384" in str(caught.value)
    code, output = run_tfod(["qat", str(smoke_run)], capsys)
    assert code == 1 and "Traceback" not in output and "QAT supports" in output


def test_a_qat_section_on_another_preset_fails_the_preflight_checks(demo_data: Path) -> None:
    summary = load_summary(demo_data)
    no_separable = {"task": {"model": {"head": {"use_separable_conv": False}}}}
    for preset, overrides, problem in (
        ("retinanet-resnet50-fpn-640-smoke", {}, "QAT supports"),
        ("retinanet-spinenet49-mobile-384-smoke", {}, "use_keras_upsampling_2d"),
        (QAT_SMOKE, no_separable, "remove the overrides of task.model.head"),
    ):
        config = smoke_config(demo_data, model={"preset": preset}, overrides=overrides).model_copy(
            update={"qat": QatSection(parent=demo_data)}
        )
        plan = make_plan(config, summary)
        findings = run_checks(config, plan, summary, build_experiment(config, plan))
        assert any(f.severity == "error" and problem in f.message for f in findings), findings


def test_qat_run_is_linked_to_a_copy_of_its_parent(qat_run: Path, float_parent: Path) -> None:
    state = RunDir(qat_run).read()
    assert state["status"] == "finished" and state["qat"]["parent"] == str(float_parent)
    assert state["qat"]["checkpoint"]["which"] == "best"
    parent = RunDir(qat_run / PARENT)
    step, prefix = parent.checkpoint("latest")
    assert step == state["qat"]["checkpoint"]["step"] == 150
    assert Path(state["qat"]["float_checkpoint"]).resolve() == prefix.resolve()
    assert (qat_run / "best").is_dir() and RunDir(qat_run).metrics()
    assert (qat_run / "plots" / "curves.png").is_file()
    plan, parent_plan = state["plan"], parent.read()["plan"]
    assert plan["learning_rate"] == pytest.approx(parent_plan["learning_rate"] / 10)


def test_the_qat_model_starts_from_every_float_weight(float_parent: Path) -> None:
    """Model Garden's QAT rebuilds the FPN with fresh weights (32 of 34 lost, AP 0.0 before any
    step); tfod copies them over. Every float weight of backbone, FPN and head is in the QAT
    model, value for value."""
    import tensorflow as tf
    from official.vision.tasks import retinanet

    from tfod.train.task import make_task

    run = RunDir(float_parent)
    config = qat_config(run)
    experiment = build_experiment(config, make_plan(config, load_summary(config.data.dir)))
    _, prefix = run.checkpoint("latest")
    experiment.task.quantization.pretrained_original_checkpoint = str(prefix)
    quantized = make_task(experiment.task).build_model()
    floating = retinanet.RetinaNetTask(experiment.task).build_model()
    status = tf.train.Checkpoint(model=floating).read(str(prefix))
    status.expect_partial().assert_existing_objects_matched()
    _assert_every_weight_kept(floating, quantized, ("backbone", "decoder", "head"))


def test_spinenet_mobile_is_built_for_qat_with_every_float_weight(
    demo_data: Path, tmp_path: Path
) -> None:
    """The other QAT preset (its float run trained with Keras upsampling): Model Garden builds its
    QAT model, with tfod's per-level head, from every float weight; and export, verify and predict
    serve its QAT checkpoint (Model Garden's QAT serving module stopped with "Not enought original
    model weights": it never called the float model, and SpineNet-Mobile's head had no weights)."""
    import tensorflow as tf
    from official.vision.tasks import retinanet

    from tfod.config.presets import SPINENET_QAT_OVERRIDE
    from tfod.model.serving import serving_module
    from tfod.train.task import make_task

    config = smoke_config(
        demo_data,
        model={"preset": "retinanet-spinenet49-mobile-384-smoke"},
        overrides=SPINENET_QAT_OVERRIDE,
    ).model_copy(update={"qat": QatSection(parent=demo_data)})
    experiment = build_experiment(config, make_plan(config, load_summary(demo_data)))
    floating = retinanet.RetinaNetTask(experiment.task).build_model()
    floating(tf.zeros([1, *experiment.task.model.input_size]), training=False)
    prefix = tf.train.Checkpoint(model=floating, **floating.checkpoint_items).write(
        str(tmp_path / "float")
    )
    experiment.task.quantization.pretrained_original_checkpoint = prefix
    quantized = make_task(experiment.task).build_model()
    assert type(quantized.head).__name__ == "LevelRangedRetinaNetHead"
    _assert_every_weight_kept(floating, quantized, ("backbone", "head"))

    trained = tf.train.Checkpoint(model=quantized).write(str(tmp_path / "qat"))
    experiment.task.quantization.pretrained_original_checkpoint = None  # as every reader has it
    served = serving_module(experiment, "tflite", Path(trained)).model
    assert type(served.head).__name__ == "LevelRangedRetinaNetHead"
    _assert_every_weight_kept(quantized, served, ("backbone", "head"))


def _assert_every_weight_kept(source: Any, target: Any, parts: tuple[str, ...]) -> None:
    """Every weight of `source`'s parts is, value for value, among `target`'s."""
    for part in parts:
        have = {np.round(w.numpy(), 6).tobytes() for w in getattr(target, part).weights}
        lost = [
            w.name
            for w in getattr(source, part).weights
            if np.round(w.numpy(), 6).tobytes() not in have
        ]
        assert not lost, f"{part}: {len(lost)} weights not in the other model: {lost[:5]}"


def test_activation_ranges_are_fitted_not_left_at_their_start(qat_run: Path) -> None:
    """tfmot starts every activation range at [-6, 6] and averages at 0.999 (~3000 steps to
    forget the start); tfod fits the decay to the run, so after a short QAT run the ranges of
    ReLU6 outputs (true minimum 0) have left -6."""
    import tensorflow as tf

    state = RunDir(qat_run).read()
    assert state["qat"]["range_decay"] == 0.9
    _, prefix = RunDir(qat_run).checkpoint("latest")
    reader = tf.train.load_checkpoint(str(prefix))
    minima = [
        float(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if "_activation_layer/output_min/" in name and "OPTIMIZER" not in name
    ]
    assert len(minima) > 10
    assert max(minima) <= 0 and min(minima) > -1.0, sorted(minima)[:5]


def test_every_pyramid_level_has_its_own_head_ranges(qat_run: Path) -> None:
    """Model Garden's QAT head shares one range per tensor across the pyramid levels, whose
    values differ 100-fold, and clips the finest levels; tfod's head fits each level's own (for
    the depthwise outputs, activations and predictions of both towers)."""
    import tensorflow as tf

    _, prefix = RunDir(qat_run).checkpoint("latest")
    reader = tf.train.load_checkpoint(str(prefix))
    names = [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER" not in n]
    # per level and tower: the convs' (depthwise output, activation), the prediction's
    # (depthwise output, output)
    # A range's end moves only where the level's values pass it: after the fixture's 30 QAT steps
    # the class logits' maximum was still its initial 0.1534 at every level in one full test run
    # (levels 4-7 in others), while their minima differed level by level. So each level's
    # (min, max) pair is compared.
    for tensor in ("classnet/1/0", "classnet/1/1", "boxnet/1/1", "classnet/0/0/0", "boxnet/0/0/1"):
        ranges = [
            tuple(
                float(reader.get_tensor(f"head/_level_ranges/{i}/{tensor}/output_{end}/{VALUE}"))
                for end in ("min", "max")
            )
            for i in range(5)  # levels 3-7
        ]
        assert len(set(ranges)) > 1, (tensor, ranges)  # each fitted to its own level
    assert not [n for n in names if n.startswith("head/_activation/")]  # no shared range left


def test_runs_compare_shows_the_pair(qat_run: Path, float_parent: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, output = run_tfod(["runs", "compare", str(float_parent), str(qat_run)], capsys)
    assert code == 0 and "float -> float-qat: " in output, output


def _agreement(reference: Any, other: Any, run: Path) -> float:
    """Share of `reference`'s detections scoring above 0.05 (the export's threshold), over all validation images, that
    `other` finds too (same class, IoU >= 0.6, score within 0.15)."""
    from tfod.export.verify import validation_images
    from tfod.model.experiment import load_experiment

    found = total = 0.0
    for _, image in validation_images(load_experiment(RunDir(run))):
        strong = reference.detect(image).above(0.05)
        if len(strong.scores):
            found += matched(strong, other.detect(image), iou=0.6, score=0.15) * len(strong.scores)
            total += len(strong.scores)
    assert total > 0, "the QAT fixture should find something on the validation images"
    return found / total


def test_qat_tflite_is_full_integer_and_detects_what_the_qat_checkpoint_does(
    qat_run: Path,
) -> None:
    from tfod.data.labelmap import read_label_map
    from tfod.model.experiment import load_experiment

    manifest = json.loads((qat_run / "export" / "export.json").read_text())
    files = {a["file"]: a for a in manifest["artefacts"]}
    assert files["model_int8.tflite"]["method"] == "quantization-aware training"
    assert files["parent_int8.tflite"]["method"] == "post-training"
    assert "model_fp32.tflite" not in files

    model = TFLiteModel(qat_run / "export" / "model_int8.tflite")
    interpreter = model._interpreter
    tensors = interpreter.get_tensor_details()
    float_ops = collections.Counter(
        op["op_name"]
        for op in interpreter._get_ops_details()
        if any(tensors[i]["dtype"] == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0)
    )
    # Float only at the edges: the input's QUANTIZE, the DEQUANTIZE of boxes and scores into the
    # post-processing op, and that op (it runs on the CPU, also beside an Edge TPU).
    assert set(float_ops) <= {"QUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"}, float_ops
    assert sum(float_ops.values()) <= 4
    assert len(interpreter._get_ops_details()) > 50

    experiment = load_experiment(RunDir(qat_run))
    labels = read_label_map(qat_run / "export" / "label_map.pbtxt")
    _, prefix = RunDir(qat_run).checkpoint("best")
    fake_quant = checkpoint_model(experiment, prefix, labels)
    assert _agreement(fake_quant, model, qat_run) >= AGREEMENT


def test_the_levels_meet_in_a_range_that_holds_every_level(qat_run: Path) -> None:
    """The post-processing op reads every level's predictions concatenated, in one int8 scale.
    Left to itself the converter picks one level's range (it took level 7's, capping level 3's
    scores); the export gives the concatenation the union of the levels' trained ranges."""
    import tensorflow as tf

    _, prefix = RunDir(qat_run).checkpoint("best")
    reader = tf.train.load_checkpoint(str(prefix))
    interpreter = TFLiteModel(qat_run / "export" / "model_int8.tflite")._interpreter
    tensors = interpreter.get_tensor_details()
    concatenated = {}  # channels (3: class scores of the demo's 3 classes; 4: boxes) -> range
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONCATENATION":
            out = tensors[op["outputs"][0]]
            scale, zero = out["quantization"]
            concatenated[int(out["shape"][-1])] = (
                scale * (-128 - zero),
                scale * (127 - zero),
                scale,
            )
    for net, channels in (("classnet", 3), ("boxnet", 4)):
        low, high, step = concatenated[channels]  # int8 nudges a range by up to half a step
        for i in range(5):  # levels 3-7
            level = f"head/_level_ranges/{i}/{net}/1/1/output_"
            assert low <= float(reader.get_tensor(f"{level}min/{VALUE}")) + step, (net, i)
            assert high >= float(reader.get_tensor(f"{level}max/{VALUE}")) - step, (net, i)


def test_integer_input_detects_what_float_input_does(qat_run: Path, tmp_path: Path) -> None:
    """`--io uint8`: integer input, float outputs (num_detections does not saturate)."""
    from tfod.export.exporter import export

    copy = tmp_path / "float-qat"
    shutil.copytree(qat_run, copy, ignore=shutil.ignore_patterns("export"))
    manifest = export(RunDir(copy), formats=["tflite"], io="uint8", calibration_images=16)
    assert {a["input"]["dtype"] for a in manifest["artefacts"]} == {"uint8"}
    model = TFLiteModel(copy / "export" / "model_int8.tflite")
    inputs = model._runner.get_input_details()
    assert all(i["dtype"] == np.uint8 for i in inputs.values())
    assert all(o["dtype"] == np.float32 for o in model._runner.get_output_details().values())
    reference = TFLiteModel(qat_run / "export" / "model_int8.tflite")
    assert _agreement(reference, model, qat_run) >= AGREEMENT


def test_verify_tells_float_post_training_and_qat_apart(qat_run: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # Every artefact "drops" more than -1 AP: the table and verify.json come first, then the
    # error naming them, QAT's int8 among them.
    code, output = run_tfod(["verify", str(qat_run), "--max-ap-drop", "-1"], capsys)
    assert code == 1, output
    rows = json.loads((qat_run / "export" / "verify.json").read_text())["rows"]
    names = [r["name"] for r in rows]
    assert names[0] == "float parent ckpt-150" and rows[0]["delta_ap"] == 0
    assert "model_int8.tflite" in names and "parent_int8.tflite" in names
    notes = {r["name"]: r["note"] for r in rows}
    assert "quantization-aware" in notes["model_int8.tflite"]
    assert "post-training" in notes["parent_int8.tflite"]
    table, error = output.split("AP dropped by more than --max-ap-drop -1.0: ")
    for name in ("float parent ckpt-150", "model_int8.tflite", "parent_int8.tflite"):
        assert name in table
    assert "model_int8.tflite" in error, error


def test_a_qat_run_exports_int8_only_and_is_no_qat_parent(qat_run: Path) -> None:
    from tfod.export.exporter import export

    with pytest.raises(TfodError, match="int8 only"):
        export(RunDir(qat_run), quants=["fp32"])
    with pytest.raises(TfodError, match="is itself a QAT run; give its float parent"):
        qat_config(RunDir(qat_run))


def test_an_unknown_input_type_is_refused_before_any_work(smoke_run: Path) -> None:
    from tfod.export.exporter import EXPORT, export

    with pytest.raises(TfodError, match="--io takes one of float, int8, uint8; got 'int4'"):
        export(RunDir(smoke_run), io="int4")
    assert not (smoke_run / EXPORT).exists()
