"""The exported files as apps load them: TFLite with MediaPipe Tasks' metadata run by its
ObjectDetector, ONNX run by ONNX Runtime, each scored against tfod's own runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers import readme_block
from tfod.data.labelmap import read_label_map
from tfod.errors import TfodError
from tfod.export import mediapipe_runtime
from tfod.export.mediapipe_runtime import WORKER, MediaPipeModel, runtime_python
from tfod.export.verify import measure, validation_images
from tfod.model.experiment import load_experiment
from tfod.predict import models
from tfod.predict.models import (
    DetectionModel,
    Detections,
    TFLiteModel,
    saved_model,
    to_original,
)
from tfod.predict.predict import load_model
from tfod.runs.rundir import RunDir

THRESHOLD = 0.05  # the export's score threshold
SIZE = 96  # the model's input: see at_input_size


@pytest.fixture(scope="module")
def at_input_size(
    exported_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[tuple[int, np.ndarray]], Path]:
    """The validation images resized to the model's input (96 px) and their ground truth.

    At the input size neither runtime resizes, so what differs is the runtime, the metadata and
    the post-processing. (On the original 256 px images MediaPipe resamples its own way, not as
    Model Garden's preprocessing does, which moves this fixture's AP by up to about 0.01.)"""
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


def _twins(ours: Detections, theirs: Detections, same_class: bool = True) -> float:
    """The share of `ours` that `theirs` also reports: a box within two pixels (MediaPipe returns
    whole pixels, and clips a box at the image's edge its own way), the score within 0.01, and
    (`same_class`) the same class."""
    found = 0
    for box, score, cls in zip(ours.boxes, ours.scores, ours.classes, strict=True):
        near = (np.abs(theirs.boxes - box).max(axis=1) < 2) & (
            np.abs(theirs.scores - score) <= 0.01
        )
        if same_class:
            near &= theirs.classes == cls
        found += bool(near.any())
    return found / max(1, len(ours.scores))


def _agreement(
    path: Path,
    labels: dict[int, str],
    images: list[tuple[int, np.ndarray]],
    same_class: bool = True,
) -> float:
    """How much of what LiteRT detects in `images` MediaPipe detects too (see _twins)."""
    litert = TFLiteModel(path, labels)
    with MediaPipeModel(path, labels) as tasks:
        shares = [
            _twins(litert.detect(image).above(THRESHOLD), tasks.detect(image), same_class)
            for _, image in images
        ]
    return float(np.mean(shares))


FINER = 16  # MediaPipe's whole pixels, made FINER times finer: see Supersampled


class Supersampled:
    """MediaPipe fed each image enlarged FINER times by repeating its pixels, boxes scaled back.

    MediaPipe returns whole pixels; at the fixture's 96 px a pixel is a large share of a 10-30 px
    box, so rounding alone moves AP at IoU 0.75-0.95 by up to about 0.014. Enlarged by a whole
    factor, MediaPipe's bilinear resize back to the 96 px input samples between copies of the
    same pixel: the model sees the very same input, and the whole pixels MediaPipe reports are
    a FINER-th of the original's."""

    def __init__(self, tasks: MediaPipeModel) -> None:
        self.tasks = tasks
        self.name, self.labels = tasks.name, tasks.labels
        self.invoke_seconds, self.latency_seconds = tasks.invoke_seconds, tasks.latency_seconds

    def detect(self, image: np.ndarray) -> Detections:
        found = self.tasks.detect(image.repeat(FINER, axis=0).repeat(FINER, axis=1))
        return Detections(found.boxes / FINER, found.scores, found.classes)


def placed_as_mediapipe(*args: Any, **kw: Any) -> Detections:
    """`to_original` after MediaPipe's rule for a box crossing the image's top or left edge: it
    moves the box inside, keeping its height and width (then the bottom and right are clipped)."""
    boxes, rest = np.asarray(args[0], np.float32), args[1:]
    origin = np.maximum(boxes[:, :2], 0.0)
    return to_original(
        np.concatenate([origin, origin + boxes[:, 2:] - boxes[:, :2]], 1), *rest, **kw
    )


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_mediapipe_detects_what_litert_detects(
    exported_run: Path,
    at_input_size: tuple[list[tuple[int, np.ndarray]], Path],
    quant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every detection, its class name mapped back through the embedded label file, and its
    score: the metadata describes the model exactly, and the MediaPipe row's AP is LiteRT's
    within 0.005 once LiteRT's boxes are placed as MediaPipe places a box crossing the top or
    left edge (placed_as_mediapipe; that alone moved AP by up to 0.006 on fixtures trained alike)
    and MediaPipe's whole pixels are finer than the fixture's (Supersampled): measured 0.0000
    apart. AP50, which a single detection moves by about 0.01 on the fixture's 10 images, within
    0.02."""
    monkeypatch.setattr(models, "to_original", placed_as_mediapipe)
    path = exported_run / "export" / f"model_{quant}.tflite"
    labels = _labels(exported_run)
    agreement = _agreement(path, labels, at_input_size[0])
    litert = measure(TFLiteModel(path, labels), *at_input_size, THRESHOLD).scores["metrics"]
    with MediaPipeModel(path, labels) as tasks:
        mediapipe = measure(Supersampled(tasks), *at_input_size, THRESHOLD).scores["metrics"]
    found = f"agreement {agreement:.3f}, LiteRT {litert}, MediaPipe {mediapipe}"
    assert agreement >= 0.9, found  # measured 0.93-1.0 over fixtures trained alike
    assert mediapipe["AP50"] == pytest.approx(litert["AP50"], abs=0.02), found
    assert mediapipe["AP"] == pytest.approx(litert["AP"], abs=0.005), found


def test_mediapipe_whole_pixel_boxes_are_read_at_their_centre(tmp_path: Path) -> None:
    """MediaPipe cuts a box's origin and size down to whole pixels: 10.x -> 10 is read as 10.5.
    (A stand-in worker answers as MediaPipe's Python API does.)"""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, sys\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "header = json.loads(sys.stdin.buffer.readline())\n"
        "sys.stdin.buffer.read(header['shape'][0] * header['shape'][1] * 3)\n"
        "print(json.dumps({'seconds': 0.001, 'detections': [[10, 20, 30, 40, 0.9, 'square']]}),"
        " flush=True)\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mediapipe_runtime, "WORKER", worker)
        patch.setenv("TFOD_MEDIAPIPE_PYTHON", sys.executable)
        with MediaPipeModel(tmp_path / "model.tflite", {1: "circle", 2: "square"}) as tasks:
            found = tasks.detect(np.zeros((100, 100, 3), np.uint8))
    np.testing.assert_allclose(found.boxes, [[20.5, 10.5, 61, 41]])  # ymin, xmin, ymax, xmax
    assert found.classes.tolist() == [2]


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
def test_a_wrong_normalisation_costs_ap_in_the_mediapipe_row(
    exported_run: Path,
    at_input_size: tuple[list[tuple[int, np.ndarray]], Path],
    bare_fp32: Path,
    tmp_path: Path,
) -> None:
    names = ["circle", "square", "triangle"]
    right, wrong = tmp_path / "right" / "model.tflite", tmp_path / "wrong" / "model.tflite"
    _rewrite_metadata(bare_fp32, right, names, "0,0,0", "1,1,1")
    _rewrite_metadata(bare_fp32, wrong, names, "127.5,127.5,127.5", "127.5,127.5,127.5")  # [-1, 1]
    with MediaPipeModel(right, _labels(exported_run)) as tasks:
        good = _ap(tasks, at_input_size)
    with MediaPipeModel(wrong, _labels(exported_run)) as tasks:
        bad = _ap(tasks, at_input_size)
    assert bad < good - 0.03, (good, bad)


@pytest.mark.slow
def test_a_wrong_label_order_gives_the_mediapipe_row_wrong_classes(
    exported_run: Path,
    at_input_size: tuple[list[tuple[int, np.ndarray]], Path],
    bare_fp32: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same boxes and scores, each under another class's name. (This under-trained fixture
    confuses its classes so much that its AP need not fall: the classes are checked instead.)
    LiteRT's edge boxes are placed as MediaPipe places them, as in the agreement test above."""
    monkeypatch.setattr(models, "to_original", placed_as_mediapipe)
    wrong = tmp_path / "wrong" / "model.tflite"
    _rewrite_metadata(bare_fp32, wrong, ["square", "triangle", "circle"], "0,0,0", "1,1,1")
    labels, images = _labels(exported_run), at_input_size[0]
    assert _agreement(wrong, labels, images, same_class=False) >= 0.9  # as the right labels'
    # (per-class NMS can report one box under two classes with close scores: a few still match)
    assert _agreement(wrong, labels, images) <= 0.15


@pytest.mark.slow
def test_onnx_runtime_detects_what_the_saved_model_does(
    exported_run: Path, at_input_size: tuple[list[tuple[int, np.ndarray]], Path]
) -> None:
    export = exported_run / "export"
    onnx = load_model(export / "model.onnx")  # as `tfod predict` loads it
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


def test_a_file_mediapipe_cannot_load_is_one_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    with pytest.raises(TfodError, match=r"MediaPipe cannot run it: .+"):
        MediaPipeModel(bogus, {1: "circle"})


def test_an_onnx_conversion_failure_quotes_the_converter(tmp_path: Path) -> None:
    from tfod.export.exporter import _onnx

    with pytest.raises(
        TfodError, match=r"tf2onnx [\d.]+ could not convert the SavedModel to ONNX: .+"
    ):
        _onnx(tmp_path / "no-saved-model", tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_the_readme_python_lines_load_the_exported_files(
    exported_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Ship the model" Python lines, in the export folder: MediaPipe's in its own
    environment, ONNX Runtime's in tfod's."""
    mediapipe_lines, onnx_lines = readme_block("Ship the model", "python").split("\n\n")
    monkeypatch.chdir(exported_run / "export")
    names: dict[str, object] = {"image_rgb_uint8": np.zeros((120, 160, 3), np.uint8)}
    exec(compile(onnx_lines, "README.md", "exec"), names)
    out = names["out"]
    assert isinstance(out, dict) and out["detection_boxes"].shape[-1] == 4, out
    shown = mediapipe_lines + "\nprint(type(detector).__name__)\n"
    result = subprocess.run([str(runtime_python()), "-c", shown], capture_output=True, text=True)
    assert result.stdout.strip() == "ObjectDetector", result.stderr[-2000:]
