"""Edge TPU compilation, driven through a stand-in `edgetpu_compiler` (Coral's runs on x86-64
Debian only, and is not installable here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPORT, WITH_FALLBACKS, stand_in
from tfod.export.edgetpu import compile_for_edgetpu, gate

MAPPED_BUT_POSTPROCESSING = REPORT.format(total=58, tpu=57, cpu=1, extra="")


STAND_IN = stand_in(MAPPED_BUT_POSTPROCESSING)


def _compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    compiler = bin_dir / "edgetpu_compiler"
    compiler.write_text(script)
    compiler.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"TFL3 stand-in model")
    return model


def test_compiles_and_counts_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _compiler(tmp_path, monkeypatch, STAND_IN)
    said: list[str] = []
    report = compile_for_edgetpu(model, said.append)
    assert (tmp_path / "args.txt").read_text().split() == [
        "--show_operations", "--out_dir", str(tmp_path), str(model),
    ]  # fmt: skip
    assert report["tpu_ops"] == 57 and report["cpu_ops"] == 1
    assert report["artefact"] == {
        "file": "model_int8_edgetpu.tflite", "bytes": model.stat().st_size, "format": "tflite",
        "quantization": "int8_edgetpu", "tpu_ops": 57, "cpu_ops": 1,
    }  # fmt: skip
    assert report["operators"][2] == {
        "op": "CUSTOM", "count": 1, "status": "Operation is working on an unsupported data type"
    }  # fmt: skip
    assert any("Edge TPU compile" in line for line in said)


def test_a_failing_compiler_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _compiler(tmp_path, monkeypatch, "#!/bin/sh\necho 'Model not quantized' >&2\nexit 1\n")
    report = compile_for_edgetpu(model, lambda _: None)
    assert "exited with 1" in report["error"] and "Model not quantized" in report["error"]
    assert "artefact" not in report


def test_without_the_compiler_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    said: list[str] = []
    report = compile_for_edgetpu(tmp_path / "model_int8.tflite", said.append)
    assert report["compiler"] is None
    assert "apt-get install edgetpu-compiler" in report["hint"] and said == [report["hint"]]


def test_the_gate_allows_the_post_processing_op_alone_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = compile_for_edgetpu(_compiler(tmp_path, monkeypatch, STAND_IN), lambda _: None)
    assert gate(report, None) is None and gate(report, 0) is not None


def test_the_gate_names_the_ops_that_fell_back_to_the_cpu_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _compiler(tmp_path, monkeypatch, stand_in(WITH_FALLBACKS))
    report = compile_for_edgetpu(model, lambda _: None)
    failed = gate(report, None)
    assert failed is not None and "runs 3 ops on the CPU, more than the 1 allowed" in failed
    assert "RESIZE_NEAREST_NEIGHBOR x2: Operation is otherwise supported, but not mapped" in failed
    assert "CUSTOM x1" in failed and "CONV_2D" not in failed
    assert gate(report, 3) is None
