"""Detector families beside RetinaNet, through the same commands: Faster R-CNN (Model Garden's
`maskrcnn` task without masks) is initialised, trained to a time budget, resumed, evaluated,
exported (SavedModel and ONNX; TFLite refused with the reason), verified and run by `tfod
predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import run_tfod
from tfod.data.demo import make_demo
from tfod.export.verify import validation_images
from tfod.model.experiment import load_experiment
from tfod.predict.models import TFLiteModel, saved_model
from tfod.runs.rundir import RunDir

pytestmark = pytest.mark.slow

FASTER_RCNN = "fasterrcnn-resnet50-fpn-640-smoke"


def _predicted(
    run: Path, model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> tuple[list[np.ndarray], list[dict[str, object]]]:
    """`tfod predict MODEL` (every score) on two of `run`'s validation images saved as photos:
    (the images, the detections JSON)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [image for _, image in validation_images(load_experiment(RunDir(run)))[:2]]
    for i, image in enumerate(images):
        Image.fromarray(image).save(photos / f"{i}.png")
    out = tmp_path / "predicted"
    command = ["predict", str(model), str(photos), "--out", str(out), "--threshold", "0"]
    code, output = run_tfod(command, capfd)
    assert code == 0 and "2 image(s)" in output, output
    return images, json.loads((out / "detections.json").read_text())


def test_faster_rcnn_goes_the_whole_path(
    demo_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config, runs = tmp_path / "tfod.yaml", tmp_path / "runs"
    init = ["init", "--data", str(demo_data), "--preset", FASTER_RCNN, "--out", str(config)]
    code, output = run_tfod(init, capfd)
    assert code == 0, output
    assert yaml.safe_load(config.read_text())["model"]["preset"] == FASTER_RCNN

    train = ["train", str(config), "--runs-dir", str(runs), "--run", "frcnn"]
    code, output = run_tfod([*train, "--time", "2m"], capfd)
    assert code == 0, output
    run = runs / "frcnn"
    state = RunDir(run).read()
    assert state["time_budget"]["budget_seconds"] == 120  # its steps fitted to the budget
    first = int(state["step"])
    code, output = run_tfod([*train, "--steps", str(first + 2), "--no-eval"], capfd)
    assert code == 0 and f"Resuming from step {first}" in output, output
    assert [s["start_step"] for s in RunDir(run).read()["sessions"]] == [0, first]

    code, output = run_tfod(["eval", str(run), "--checkpoint", "latest"], capfd)
    assert code == 0 and f"COCO metrics, step {first + 2}" in output, output

    code, output = run_tfod(["export", str(run), "--format", "tflite"], capfd)
    assert code == 1 and "a fasterrcnn run exports saved_model, onnx, not tflite" in output
    assert "tflite_post_processing" in output and not (run / "export").exists()

    code, output = run_tfod(["export", str(run), "--verify"], capfd)
    assert code == 0, output
    verified = json.loads((run / "export" / "verify.json").read_text())["rows"]
    rows = {row["name"]: row for row in verified}
    assert list(rows)[1:] == ["saved_model", "model.onnx"]
    reference = verified[0]
    assert rows["saved_model"]["ap"] == pytest.approx(reference["ap"], abs=1e-6)
    assert rows["model.onnx"]["ap"] == pytest.approx(rows["saved_model"]["ap"], abs=0.005)

    _predicted(run, run, tmp_path, capfd)


MASK_RCNN = "maskrcnn-resnet50-fpn-640-smoke"


def test_mask_rcnn_needs_masks_then_trains_evaluates_its_masks_and_exports(
    demo_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Refused on a dataset without masks (the check names the ways to get them); on the demo
    with masks it trains, reports mask AP beside box AP, and exports what the family exports."""
    config, runs = tmp_path / "tfod.yaml", tmp_path / "runs"

    def init(data: Path) -> None:
        command = ["init", "--data", str(data), "--preset", MASK_RCNN, "--out", str(config)]
        code, output = run_tfod([*command, "--force"], capfd)
        assert code == 0, output

    init(demo_data)
    train = ["train", str(config), "--runs-dir", str(runs), "--run", "mrcnn", "--steps", "4"]
    code, output = run_tfod(train, capfd)
    assert code == 1 and "learns instance masks" in output and "--masks" in output, output

    masked = tmp_path / "masked"
    make_demo(masked, n=24, progress=False, masks=True)
    init(masked)
    code, output = run_tfod([*train, "--no-eval"], capfd)  # `tfod eval` scores it below
    assert code == 0, output
    run = runs / "mrcnn"
    code, output = run_tfod(["eval", str(run), "--checkpoint", "latest"], capfd)
    assert code == 0 and "mask_AP" in output, output
    row = RunDir(run).metrics()[-1]
    assert {"AP", "mask_AP", "mask_AP50"} <= set(row["metrics"]), row["metrics"]
    detections = json.loads((run / "eval" / f"detections-{row['step']}.json").read_text())
    assert detections and all(d["segmentation"]["counts"] for d in detections)

    code, output = run_tfod(["export", str(run), "--verify"], capfd)
    assert code == 0, output
    rows = json.loads((run / "export" / "verify.json").read_text())["rows"]
    assert [r["name"] for r in rows][1:] == ["saved_model", "model.onnx"]

    images, found = _predicted(run, run / "export" / "saved_model", tmp_path, capfd)
    assert found and all(d["segmentation"]["size"] == list(images[0].shape[:2]) for d in found)


YOLO = "yolov7-tiny-416-smoke"


def test_yolov7_goes_the_whole_path(
    demo_data: Path, smoke_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """YOLOv7 (Model Garden's `official/projects/yolo`): its own task, parser, loss and serving
    module behind the same commands, with tfod's class ids and COCO scoring."""
    config, runs = tmp_path / "tfod.yaml", tmp_path / "runs"
    init = ["init", "--data", str(demo_data), "--preset", YOLO, "--out", str(config)]
    code, output = run_tfod(init, capfd)
    assert code == 0, output

    train = ["train", str(config), "--runs-dir", str(runs), "--run", "yolo"]
    code, output = run_tfod([*train, "--steps", "4"], capfd)
    assert code == 0 and "step 4: AP" in output, output
    run = runs / "yolo"
    state = RunDir(run).read()
    assert (
        state["loss"] == pytest.approx(state["loss"]) and state["loss"] > 0
    )  # YOLO's, as Model Garden's trainer names it
    code, output = run_tfod([*train, "--steps", "6", "--no-eval"], capfd)
    assert code == 0 and "Resuming from step 4" in output, output

    code, output = run_tfod(["eval", str(run), "--checkpoint", "latest"], capfd)
    assert code == 0 and "COCO metrics, step 6" in output, output
    detections = json.loads((run / "eval" / "detections-6.json").read_text())
    assert {d["category_id"] for d in detections} <= {1, 2, 3}  # tfod's ids, not COCO's 80

    plot = tmp_path / "compare.png"
    code, output = run_tfod(
        ["runs", "compare", str(smoke_run), str(run), "--plot", str(plot)], capfd
    )
    assert code == 0 and "plan.preset" in output and YOLO in output, output
    assert plot.stat().st_size > 10_000  # both families' loss and AP curves

    code, output = run_tfod(["export", str(run), "--checkpoint", "latest", "--verify"], capfd)
    assert code == 0, output
    verified = json.loads((run / "export" / "verify.json").read_text())["rows"]
    rows = {row["name"]: row for row in verified}
    tflite = [f"model_{q}.tflite" for q in ("fp32", "fp16", "int8")]
    mediapipe = [f"{name} · MediaPipe" for name in tflite]
    assert set(rows) >= {*tflite, *mediapipe, "saved_model", "model.onnx"}, list(rows)
    # The checkpoint row is served as the SavedModel is; it scores as `tfod eval` did.
    assert verified[0]["ap"] == pytest.approx(RunDir(run).metrics()[-1]["metrics"]["AP"], abs=0.01)
    assert rows["saved_model"]["ap"] == pytest.approx(verified[0]["ap"], abs=1e-6)
    assert rows["model.onnx"]["ap"] == pytest.approx(rows["saved_model"]["ap"], abs=0.005)

    # TFLite's post-processing op gives back the boxes YOLO decoded (tfod encodes them as offsets
    # from each prediction's grid cell and anchor): on an image at the input size, where neither
    # resizes, the fp32 model's best detections are the SavedModel's.
    _, image = validation_images(load_experiment(RunDir(run)))[0]
    image = np.asarray(Image.fromarray(image).resize((64, 64)))
    reference = saved_model(run / "export" / "saved_model").detect(image)
    got = TFLiteModel(run / "export" / "model_fp32.tflite").detect(image)
    top = 10
    assert len(got.scores) >= top
    np.testing.assert_allclose(got.scores[:top], reference.scores[:top], atol=1e-4)
    np.testing.assert_allclose(got.boxes[:top], reference.boxes[:top], atol=0.05)
    np.testing.assert_array_equal(got.classes[:top], reference.classes[:top])

    images, found = _predicted(run, run / "export" / "model.onnx", tmp_path, capfd)
    assert {d["category_id"] for d in found} <= {1, 2, 3}  # never YOLO's unused class 0
    right = [d["bbox"][0] + d["bbox"][2] for d in found]  # boxes mapped back into the picture
    assert (
        found and min(d["bbox"][0] for d in found) >= 0 and max(right) <= images[0].shape[1] + 1e-3
    )
