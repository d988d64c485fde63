"""`tfod verify`: every artefact scored like `tfod eval`; a bad artefact trips --max-ap-drop."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfod.errors import TfodError
from tfod.export.verify import Verified, check_ap_drop, verify
from tfod.runs.rundir import RunDir

pytestmark = pytest.mark.slow


def test_every_artefact_is_scored_against_the_checkpoint(exported_run: Path) -> None:
    rows, images = verify(RunDir(exported_run))
    names = [r.name for r in rows]
    assert names == [
        "checkpoint ckpt-200", "saved_model", "model.onnx",
        "model_fp32.tflite", "model_fp32.tflite · MediaPipe",
        "model_fp16.tflite", "model_fp16.tflite · MediaPipe",
        "model_int8.tflite", "model_int8.tflite · MediaPipe",
    ]  # fmt: skip
    reference, saved, onnx = rows[0], rows[1], rows[2]
    assert reference.ap > 0.05
    assert saved.ap == pytest.approx(reference.ap, abs=1e-6)  # the same graph, served
    assert onnx.ap == pytest.approx(saved.ap, abs=0.005)
    assert onnx.note == "ONNX Runtime, opset 17"
    for row in rows[2:]:
        assert row.delta_ap > -0.05, row  # TFLite's NMS op differs slightly from NMS v2
        assert row.latency_ms > 0 and row.invoke_ms > 0 and row.speedup > 0
    for litert, tasks in zip(rows[3::2], rows[4::2], strict=True):
        # MediaPipe resizes the 256 px images to 96 px its own way, so on this fixture's few
        # validation images the two rows differ by the resize (0.001-0.022 AP over CI runs, both
        # ways); test_runtimes compares them at 96 px, where they agree within 0.005.
        assert tasks.ap == pytest.approx(litert.ap, abs=0.04), (litert, tasks)
        assert "MediaPipe 0.10.21 object detector" in tasks.note
    document = json.loads((exported_run / "export" / "verify.json").read_text())
    assert document["images"] == images > 0
    assert [r["name"] for r in document["rows"]] == names
    manifest = json.loads((exported_run / "export" / "export.json").read_text())
    assert manifest["verification"] == "verify.json"
    classes = {"circle", "square", "triangle"}
    assert set(reference.per_class) == classes
    assert set(document["per_class_delta_ap"]) == set(names[1:])  # JSON keys are sorted
    assert manifest["per_class_delta_ap"] == document["per_class_delta_ap"]
    for name, row in zip(names[1:], rows[1:], strict=True):
        for cls, change in manifest["per_class_delta_ap"][name].items():
            assert change == pytest.approx(row.per_class[cls] - reference.per_class[cls], abs=1e-4)


def test_per_class_shows_a_lost_class_that_the_mean_hides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tfod.console import console
    from tfod.export.report import print_per_class
    from tfod.export.verify import per_class_delta_ap

    common = {"car": 0.80, "person": 0.70}
    rows = [
        Verified("checkpoint ckpt-9", None, 0.60, 0.9, 10.0, 9.0, per_class={**common, "bike": 0.30, "boat": None}),
        Verified("model_int8.tflite", 10**6, 0.57, 0.9, 5.0, 4.0, -0.03, 2.0, per_class={**common, "bike": 0.21, "boat": None}),
    ]  # fmt: skip
    assert per_class_delta_ap(rows) == {
        "model_int8.tflite": {"car": 0.0, "person": 0.0, "bike": -0.09}
    }
    print_per_class(console, rows)
    out = capsys.readouterr().err
    line = next(line for line in out.splitlines() if "bike" in line)
    assert "0.300" in line and "-0.090" in line
    assert "—" in next(line for line in out.splitlines() if "boat" in line)


def test_ap_drop_check_names_the_artefact_and_the_ways_out() -> None:
    nan = math.nan
    rows = [
        Verified("checkpoint ckpt-9", None, 0.5, 0.8, 10, 10),
        Verified("model_fp16.tflite", 1, 0.49, 0.8, 5, 5, -0.01, 2),
        Verified("model_int8.tflite", 1, 0.2, 0.4, 4, 4, -0.3, 2.5),
        Verified("model_int8_edgetpu.tflite", 1, nan, nan, nan, nan, nan, nan, "needs a TPU"),
    ]
    check_ap_drop(rows, 0.35)
    with pytest.raises(TfodError) as caught:
        check_ap_drop(rows, 0.05)
    message = str(caught.value)
    assert "model_int8.tflite 0.500 -> 0.200" in message and "fp16.tflite" not in message
    assert (
        "fp16" in message and "--calibration-images" in message and "quantization-aware" in message
    )


def _corrupt_convolutions(path: Path) -> int:
    """Multiply every convolution kernel of a float TFLite model by noise; returns how many."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    codes = [c.builtinCode or c.deprecatedBuiltinCode for c in model.operatorCodes]
    rng = np.random.default_rng(0)
    corrupted = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] in (3, 4):  # CONV_2D, DEPTHWISE_CONV_2D
                buffer = model.buffers[graph.tensors[op.inputs[1]].buffer]
                weights = np.frombuffer(bytes(buffer.data), np.float32)
                noise = rng.normal(1.0, 1.0, weights.shape).astype(np.float32)
                buffer.data = (weights * noise).tobytes()
                corrupted += 1
    flatbuffer_utils.write_model(model, str(path))
    return corrupted


def test_bad_artefacts_fail_verify_with_max_ap_drop(exported_run: Path, tmp_path: Path) -> None:
    """A model with corrupted weights scores ~0 AP; one that no longer runs is a row, not a crash."""
    from tensorflow.lite.tools import flatbuffer_utils

    copy = tmp_path / exported_run.name
    shutil.copytree(exported_run, copy)
    assert _corrupt_convolutions(copy / "export" / "model_fp32.tflite") > 10
    broken = flatbuffer_utils.read_model(str(copy / "export" / "model_fp16.tflite"))
    flatbuffer_utils.randomize_weights(broken, random_seed=0)  # anchors and shapes too
    flatbuffer_utils.write_model(broken, str(copy / "export" / "model_fp16.tflite"))

    result = subprocess.run(
        [sys.executable, "-m", "tfod", "verify", str(copy), "--max-ap-drop", "0.05"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Verification on" in result.stderr and "fails to run" in result.stderr
    error = result.stderr[result.stderr.index("error:") :].replace("\n", " ")
    assert "AP dropped by more than --max-ap-drop 0.05" in error
    assert "model_fp32.tflite" in error and "model_fp16.tflite" in error
    assert "model_int8.tflite" not in error


def test_verify_refuses_an_export_whose_checkpoint_is_gone(
    exported_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / exported_run.name
    shutil.copytree(exported_run, copy)
    manifest_path = copy / "export" / "export.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["checkpoint"]["path"] = str(copy / "ckpt-999")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TfodError, match="the checkpoint this export was made from is gone"):
        verify(RunDir(copy))
