"""Edge TPU: compile the full-integer TFLite model with Coral's `edgetpu_compiler`, when present.

The compiler maps what it can of the graph to the TPU and leaves the rest (here, at least the
detection post-processing op, TFLite's one CUSTOM op) to the CPU; how many ops land where decides
the speed-up, and a model whose ops mostly fall back to the CPU is slower than the CPU model with
nothing failing. So the manifest records both counts and the compiler's operator table, and
`gate` fails an export whose CPU share is more than allowed, naming the ops and the compiler's
reason for each.
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
_OPERATOR = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")  # a row of its table
MAPPED = "Mapped to Edge TPU"
POSTPROCESSING_OP = "CUSTOM"  # TFLite_Detection_PostProcess: always on the CPU


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
    report["operators"] = operators(log)
    report["artefact"] = {
        "file": compiled.name,
        "bytes": compiled.stat().st_size,
        "format": "tflite",
        "quantization": "int8_edgetpu",
        "tpu_ops": report["tpu_ops"],
        "cpu_ops": report["cpu_ops"],
    }
    return report


def operators(log: str) -> list[dict[str, Any]]:
    """The compiler's `--show_operations` table: each operator, its count and its status."""
    rows = []
    for line in log.splitlines():
        match = _OPERATOR.match(line.strip())
        if match and match[1] != "Operator":
            rows.append({"op": match[1], "count": int(match[2]), "status": match[3]})
    return rows


def gate(report: dict[str, Any], max_cpu_ops: int | None) -> str | None:
    """Why the compiled model fails the gate (None: it passes, or nothing was compiled).

    Args:
        max_cpu_ops: how many ops may run on the CPU; None: the post-processing op(s) alone.
    """
    cpu = report.get("cpu_ops")
    if cpu is None:
        return None
    unmapped = [row for row in report.get("operators", []) if row["status"] != MAPPED]
    allowed = max_cpu_ops
    if allowed is None:
        allowed = sum(r["count"] for r in unmapped if r["op"] == POSTPROCESSING_OP) or 1
    if cpu <= allowed:
        return None
    named = "; ".join(f"{r['op']} x{r['count']}: {r['status']}" for r in unmapped)
    return (
        f"the Edge TPU model runs {cpu} ops on the CPU, more than the {allowed} allowed "
        f"(--max-cpu-ops): each of them is a round trip off the TPU, and such a model can be "
        f"slower than the CPU one. {named or 'The compiler named no operator'}. The artefacts "
        "are kept (export.json records the compiler's report); `tfod verify` scores them"
    )
