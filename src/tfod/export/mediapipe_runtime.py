"""MediaPipe Tasks from tfod: TFLite metadata (`write_metadata`) and its ObjectDetector as a
`verify` runtime (`MediaPipeModel`).

MediaPipe cannot share tfod's environment (it needs absl-py 2, Model Garden's
tensorflow-model-optimization absl-py 1; and opencv-contrib beside opencv-headless), so tfod runs
`mediapipe_worker.py` with the Python of an environment of its own: $TFOD_MEDIAPIPE_PYTHON if set,
otherwise one tfod makes once under its cache folder from the pinned, hashed
`mediapipe-requirements.txt` (`nox -s lock` remakes it). The version is 0.10.21: the later
releases' Python metadata writer does not import (their wheels lack `_pywrap_metadata_version`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from tfod import lockfile
from tfod.errors import TfodError, last_error
from tfod.predict.models import Detections, check_image, to_original
from tfod.zoo.cache import cache_dir

PYTHON_ENV = "TFOD_MEDIAPIPE_PYTHON"
VERSION = "0.10.21"
HERE = Path(__file__).parent
WORKER = HERE / "mediapipe_worker.py"
REQUIREMENTS = HERE / "mediapipe-requirements.txt"
NOT_INSTALLED = (
    f"MediaPipe {VERSION} could not be installed into its own environment ({{why}}); "
    f"set {PYTHON_ENV} to the Python of an environment with mediapipe=={VERSION}, "
    "or export with --no-metadata"
)


def runtime_python(say: Callable[[str], None] = print) -> Path:
    """The Python of MediaPipe's environment; made (about 20 s, 450 MB) on first use."""
    if given := os.environ.get(PYTHON_ENV):
        if not Path(given).is_file():
            raise TfodError(f"{PYTHON_ENV} names no file", Path(given))
        return Path(given)
    return install(cache_dir() / "runtimes" / f"mediapipe-{VERSION}", say)


def install(folder: Path, say: Callable[[str], None] = print) -> Path:
    """MediaPipe's environment in `folder` (made if missing; a half-made one never counts)."""
    python = folder / "bin" / "python"
    if python.is_file():
        return python
    with lockfile.hold(folder.with_name(folder.name + ".lock"), lambda holder: say(
        f"Waiting for another tfod process ({holder}) that installs MediaPipe"
    )):  # fmt: skip
        if python.is_file():
            return python
        say(f"Installing MediaPipe {VERSION} into {folder} (once: about 450 MB)")
        building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            _run([sys.executable, "-m", "venv", str(building)])
            _run([
                str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
                "--disable-pip-version-check", "--no-deps", "--require-hashes",
                "-r", str(REQUIREMENTS),
            ])  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)  # a folder without bin/python is not one
            building.rename(folder)  # whole or not at all (a venv runs from where it is moved)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return python


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = last_error(done.stderr or done.stdout, f"exit status {done.returncode}")
        raise TfodError(NOT_INSTALLED.format(why=why))


def write_metadata(
    model: Path, labels: list[str], name: str, say: Callable[[str], None] = print
) -> str:
    """Add MediaPipe's object-detector metadata to the .tflite at `model`, in place: input RGB
    0..255 (mean 0, std 1: tfod's TFLite models normalise inside), the label file (line i is
    class id i+1), and the four post-processing outputs' roles. Returns what wrote it."""
    python = runtime_python(say)
    with tempfile.TemporaryDirectory(prefix=".metadata-", dir=model.parent) as work:
        label_file = Path(work) / "labels.txt"
        label_file.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        written = Path(work) / model.name
        done = subprocess.run(
            [str(python), str(WORKER), "metadata", str(model), str(written), str(label_file),
             "0,0,0", "1,1,1"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not written.is_file():
            raise TfodError(
                f"MediaPipe could not write {name}'s metadata: {last_error(done.stderr, 'no output')}"
            )
        written.replace(model)
    return f"MediaPipe {VERSION} object detector"


class MediaPipeModel:
    """A .tflite with metadata, run by MediaPipe Tasks' ObjectDetector in a worker process.

    Boxes and class names are what MediaPipe returns (its own resizing, normalisation from the
    metadata and label file); the names map back to label ids, so a wrong label file or
    normalisation costs AP. Latency and invoke are both MediaPipe's one `detect` call, timed in
    the worker (the transfer of the image to it is not counted)."""

    def __init__(self, path: Path, labels: dict[int, str]) -> None:
        self.name = f"{path.name} · MediaPipe"
        self.labels = labels
        self.invoke_seconds: list[float] = []
        self.latency_seconds: list[float] = []
        self._ids = {name: label_id for label_id, name in labels.items()}
        self._log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        self._worker = subprocess.Popen(
            [str(runtime_python()), str(WORKER), "detect", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )  # fmt: skip
        self._answer()  # {"ready": true}, or the worker's error

    def _answer(self) -> dict[str, Any]:
        assert self._worker.stdout is not None
        line = self._worker.stdout.readline()
        if not line:
            self._worker.wait()
            self._log.seek(0)
            why = last_error(self._log.read(), f"exit status {self._worker.returncode}")
            raise TfodError(f"MediaPipe cannot run it: {why}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def detect(self, image: np.ndarray) -> Detections:
        check_image(image)
        assert self._worker.stdin is not None
        header = json.dumps({"shape": list(image.shape)}) + "\n"
        try:
            self._worker.stdin.write(header.encode() + np.ascontiguousarray(image).tobytes())
            self._worker.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone: _answer says why
        answer = self._answer()
        self.invoke_seconds.append(answer["seconds"])
        self.latency_seconds.append(answer["seconds"])
        found = [d for d in answer["detections"] if d[5] in self._ids]
        # MediaPipe cuts a box's origin and its size each down to whole pixels (C++ int casts):
        # the value lies in [n, n + 1), read at its centre, n + 0.5. Read as n, every box would
        # sit half a pixel up-left and a pixel small, which costs AP that the model did not lose.
        corners = [[y + 0.5, x + 0.5, y + h + 1, x + w + 1] for x, y, w, h, _, _ in found]
        return to_original(
            np.array(corners, np.float32).reshape(-1, 4),
            np.array([d[4] for d in found], np.float32),
            np.array([self._ids[d[5]] for d in found], np.int64),
            np.ones(2, np.float32),  # already in the image's pixels
            image.shape,
        )

    def __enter__(self) -> MediaPipeModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._worker.stdin is not None:
            self._worker.stdin.close()
        self._worker.wait()
        self._log.close()


if (
    __name__ == "__main__"
):  # python -m tfod.export.mediapipe_runtime FOLDER: make the environment there
    print(install(Path(sys.argv[1]).resolve()))
