"""Helpers the test modules share: running tfod in this process or as a child, waiting, matching
detections, a stand-in Edge TPU compiler."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tfod.cli import main
from tfod.predict.models import Detections


def run_tfod(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `tfod ARGS` in this process, as the console script does; (exit status, stderr)."""
    argv = sys.argv
    sys.argv = ["tfod", *args]
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.err + captured.out


ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[tuple[str, str, str]]:
    """The README's fenced code blocks: (the heading they are under, "" before the first; their
    language; their text)."""
    blocks: list[tuple[str, str, str]] = []
    section, language, lines = "", None, []
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if language is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif language is None and line.startswith("```"):
            language, lines = line.removeprefix("```"), []
        elif language is not None and line.startswith("```"):
            blocks.append((section, language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def readme_block(section: str, language: str) -> str:
    """The one `language` block under the README's heading `section` ("" before the first)."""
    found = [text for s, lang, text in readme_blocks() if (s, lang) == (section, language)]
    assert len(found) == 1, f"README: {len(found)} {language} blocks in section {section!r}"
    return found[0]


def readme_commands(section: str, language: str = "bash") -> list[list[str]]:
    """The commands of a README shell block, each split into words, comments left out."""
    return [
        shlex.split(line, comments=True)
        for line in readme_block(section, language).splitlines()
        if line.strip()
    ]


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every file under `root` (links followed once) -> sha256 of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and path.is_relative_to(skip):
            continue
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def spawn(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tfod", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TFOD_PROGRESS_SECONDS": "0", **env},
    )  # fmt: skip


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def iou_of(a: np.ndarray, b: np.ndarray) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def matched(reference: Detections, other: Detections, iou: float, score: float) -> float:
    """Fraction of `reference` detections that `other` has too: same class, overlapping box,
    close score."""
    hits = 0
    for box, ref_score, cls in zip(
        reference.boxes, reference.scores, reference.classes, strict=True
    ):
        hits += any(
            c == cls and iou_of(box, b) >= iou and abs(s - ref_score) <= score
            for b, s, c in zip(other.boxes, other.scores, other.classes, strict=True)
        )
    return hits / len(reference.scores)


# What Coral's compiler 16 prints with --show_operations (its operator table as documented at
# https://coral.ai/docs/edgetpu/compiler/): format with the op counts and an `extra` table row.
REPORT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1163 ms.

Input model: model_int8.tflite
Input size: 2.89MiB
Output model: model_int8_edgetpu.tflite
Output size: 3.11MiB
Number of Edge TPU subgraphs: 1
Total number of operations: {total}
Operation log: model_int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: {tpu}
Number of operations that will run on CPU: {cpu}

Operator                       Count      Status

CONV_2D                        40         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
CUSTOM                         1          Operation is working on an unsupported data type
{extra}
Compilation child process completed within timeout period.
Compilation succeeded!
"""


WITH_FALLBACKS = REPORT.format(
    total=60, tpu=57, cpu=3,
    extra="RESIZE_NEAREST_NEIGHBOR        2          Operation is otherwise supported, but not mapped due to some unspecified limitation",
)  # fmt: skip


def stand_in(report: str) -> str:
    """A stand-in `edgetpu_compiler --show_operations --out_dir DIR MODEL` printing `report`."""
    return (
        '#!/bin/sh\necho "$@" > "$3/args.txt"\n'
        'cp "$4" "$3/$(basename "$4" .tflite)_edgetpu.tflite"\n'
        f"cat <<'EOF'\n{report}EOF\n"
    )
