"""The exported files as apps load them: TFLite with MediaPipe Tasks' metadata run by its
ObjectDetector, ONNX run by ONNX Runtime, each scored against tfod's own runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfod.data.labelmap import read_label_map
from tfod.errors import TfodError
from tfod.evaluate.evaluator import load_experiment
from tfod.export import mediapipe_runtime
from tfod.export.mediapipe_runtime import WORKER, MediaPipeModel, runtime_python
from tfod.export.verify import measure, validation_images
from tfod.predict.models import DetectionModel, TFLiteModel, onnx_model, saved_model
from tfod.runs.rundir import RunDir

THRESHOLD = 0.05  # the export's score threshold
SIZE = 96  # the model's input: see at_input_size


@pytest.fixture(scope="module")
def at_input_size(
    exported_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[tuple[int, np.ndarray]], Path]:
    """The validation images resized to the model's input (96 px) and their ground truth.

    At the input size neither runtime resizes, so what differs is the runtime, the metadata and
    the post-processing. MediaPipe's boxes are whole pixels, which alone moves AP here by about
    0.005 (on the original 256 px images MediaPipe's own resampling adds about as much again)."""
    import json

    experiment = load_experiment(RunDir(exported_run))
    images = validation_images(experiment)
    truth = json.loads(Path(experiment.task.annotation_file).read_text())
    factor = SIZE / 256
    for image in truth["images"]:
        assert (image["height"], image["width"]) == (256, 256)
        image["height"] = image["width"] = SIZE
    for box in truth["annotations"]:
        box["bbox"] = [v * factor for v in box["bbox"]]
        box["area"] *= factor * factor
    path = tmp_path_factory.mktemp("truth") / f"val_coco_{SIZE}.json"
    path.write_text(json.dumps(truth))
    resized = [
        (i, np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.BICUBIC))) for i, a in images
    ]
    return resized, path


def _ap(model: DetectionModel, data: tuple[list[tuple[int, np.ndarray]], Path]) -> float:
    images, truth = data
    ap: float = measure(model, images, truth, THRESHOLD).scores["metrics"]["AP"]
    return ap


def _labels(exported_run: Path) -> dict[int, str]:
    return read_label_map(exported_run / "export" / "label_map.pbtxt")


@pytest.mark.slow
@pytest.mark.parametrize(("quant", "within"), [("fp32", 0.01), ("int8", 0.025)])
def test_mediapipe_scores_what_litert_scores(
    exported_run: Path,
    at_input_size: tuple[list[tuple[int, np.ndarray]], Path],
    quant: str,
    within: float,
) -> None:
    """Within `within` AP: MediaPipe's whole-pixel boxes, and (int8) its own float-to-int8 input
    rounding, move AP by that much on this small fixture; a wrong normalisation or label order
    costs far more (below)."""
    path = exported_run / "export" / f"model_{quant}.tflite"
    litert = _ap(TFLiteModel(path, _labels(exported_run)), at_input_size)
    with MediaPipeModel(path, _labels(exported_run)) as tasks:
        mediapipe = _ap(tasks, at_input_size)
    assert litert > 0.05
    assert mediapipe == pytest.approx(litert, abs=within)


@pytest.fixture(scope="module")
def bare_fp32(exported_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`exported_run`'s fp32 TFLite exported again with --no-metadata (in a copy of the run)."""
    from tfod.export.exporter import export

    copy = tmp_path_factory.mktemp("bare") / "trained"
    shutil.copytree(exported_run, copy)
    manifest = export(RunDir(copy), formats=["tflite"], quants=["fp32"], metadata=False)
    (fp32,) = [a for a in manifest["artefacts"] if a["file"] == "model_fp32.tflite"]
    assert "metadata" not in fp32
    return copy / "export" / "model_fp32.tflite"


def _rewrite_metadata(source: Path, target: Path, labels: list[str], mean: str, std: str) -> None:
    target.parent.mkdir()
    label_file = target.with_suffix(".txt")
    label_file.write_text("".join(f"{name}\n" for name in labels))
    subprocess.run(
        [str(runtime_python()), str(WORKER), "metadata", str(source), str(target),
         str(label_file), mean, std],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("labels", "mean", "std"),
    [
        (["circle", "square", "triangle"], "127.5,127.5,127.5", "127.5,127.5,127.5"),  # [-1, 1]
        (["square", "triangle", "circle"], "0,0,0", "1,1,1"),  # every name on another class
    ],
    ids=["wrong-normalisation", "wrong-label-order"],
)
def test_wrong_metadata_costs_ap_in_the_mediapipe_row(
    exported_run: Path,
    at_input_size: tuple[list[tuple[int, np.ndarray]], Path],
    bare_fp32: Path,
    tmp_path: Path,
    labels: list[str],
    mean: str,
    std: str,
) -> None:
    right, wrong = tmp_path / "right" / "model.tflite", tmp_path / "wrong" / "model.tflite"
    _rewrite_metadata(bare_fp32, right, ["circle", "square", "triangle"], "0,0,0", "1,1,1")
    _rewrite_metadata(bare_fp32, wrong, labels, mean, std)
    with MediaPipeModel(right, _labels(exported_run)) as tasks:
        good = _ap(tasks, at_input_size)
    with MediaPipeModel(wrong, _labels(exported_run)) as tasks:
        bad = _ap(tasks, at_input_size)
    assert bad < good - 0.03, (good, bad)


@pytest.mark.slow
def test_onnx_runtime_detects_what_the_saved_model_does(
    exported_run: Path, at_input_size: tuple[list[tuple[int, np.ndarray]], Path]
) -> None:
    export = exported_run / "export"
    onnx = onnx_model(export / "model.onnx")
    reference = saved_model(export / "saved_model")
    assert onnx.labels == reference.labels == _labels(exported_run)
    assert _ap(onnx, at_input_size) == pytest.approx(_ap(reference, at_input_size), abs=0.005)
    image = at_input_size[0][0][1]
    got, want = onnx.detect(image), reference.detect(image)
    np.testing.assert_allclose(got.scores[:10], want.scores[:10], atol=1e-3)


def test_an_environment_variable_naming_no_python_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TFOD_MEDIAPIPE_PYTHON", str(tmp_path / "missing" / "python"))
    with pytest.raises(TfodError, match="TFOD_MEDIAPIPE_PYTHON names no file"):
        runtime_python()


def test_a_failed_install_leaves_nothing_and_says_the_ways_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", shutil.which("false") or "/bin/false")
    folder = tmp_path / "runtimes" / "mediapipe"
    folder.parent.mkdir()
    with pytest.raises(TfodError) as caught:
        mediapipe_runtime.install(folder, say=lambda _: None)
    assert "TFOD_MEDIAPIPE_PYTHON" in str(caught.value)
    assert "--no-metadata" in str(caught.value)
    assert [p.name for p in folder.parent.iterdir()] == ["mediapipe.lock"]
