"""Edge TPU compilation, driven through a stand-in `edgetpu_compiler` (Coral's runs on x86-64
Debian only, and is not installable here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfod.export.edgetpu import compile_for_edgetpu

STAND_IN = """#!/bin/sh
# edgetpu_compiler --show_operations --out_dir DIR MODEL
echo "$@" > "$3/args.txt"
cp "$4" "$3/$(basename "$4" .tflite)_edgetpu.tflite"
echo "Edge TPU Compiler version 16.0.384591198"
echo "Number of operations that will run on Edge TPU: 57"
echo "Number of operations that will run on CPU: 2"
"""


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
    assert report["tpu_ops"] == 57 and report["cpu_ops"] == 2
    assert report["artefact"] == {
        "file": "model_int8_edgetpu.tflite", "bytes": model.stat().st_size, "format": "tflite",
        "quantization": "int8_edgetpu", "tpu_ops": 57, "cpu_ops": 2,
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
