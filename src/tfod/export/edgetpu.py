"""Edge TPU: compile the full-integer TFLite model with Coral's `edgetpu_compiler`, when present.

The compiler maps what it can of the graph to the TPU and leaves the rest (here, at least the
detection post-processing op) to the CPU; how many ops land where decides the speed-up, so the
manifest records both counts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPILER = "edgetpu_compiler"
HOW_TO_GET = (
    "edgetpu_compiler not found on PATH, so no Edge TPU model was made. It runs on x86-64 "
    "Debian/Ubuntu: add Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/) and "
    "`apt-get install edgetpu-compiler`, then run `tfod export` again."
)
_COUNT = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")


def compile_for_edgetpu(model: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Compile `model` into `<stem>_edgetpu.tflite` beside it.

    Returns:
        {"compiler": path or None, "hint" | "tpu_ops", "cpu_ops", "log", "artefact"}; a failed
        compilation is reported in "error", not raised: the other artefacts stay usable.
    """
    compiler = shutil.which(COMPILER)
    if compiler is None:
        say(HOW_TO_GET)
        return {"compiler": None, "hint": HOW_TO_GET}
    say(f"Edge TPU compile ({compiler})")
    out = model.parent
    result = subprocess.run(
        [compiler, "--show_operations", "--out_dir", str(out), str(model)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    log = result.stdout + result.stderr
    compiled = out / f"{model.stem}_edgetpu.tflite"
    report: dict[str, Any] = {"compiler": compiler, "log": log[-4000:]}
    if result.returncode != 0 or not compiled.is_file():
        report["error"] = f"{COMPILER} exited with {result.returncode}: {log.strip()[-500:]}"
        say(report["error"])
        return report
    counts = {where: int(n) for where, n in _COUNT.findall(log)}
    report["tpu_ops"] = counts.get("Edge TPU")
    report["cpu_ops"] = counts.get("CPU")
    report["artefact"] = {
        "file": compiled.name,
        "bytes": compiled.stat().st_size,
        "format": "tflite",
        "quantization": "int8_edgetpu",
        "tpu_ops": report["tpu_ops"],
        "cpu_ops": report["cpu_ops"],
    }
    return report
