"""Runs inside MediaPipe's own environment (`tfod.export.mediapipe_runtime`), never imported by tfod.

MediaPipe's pins (absl-py 2, opencv-contrib) cannot share tfod's environment, so tfod starts this
file with that environment's Python. It needs only MediaPipe and numpy. (Python puts this file's
folder first on sys.path: no module beside it may be called `mediapipe`.)

  python mediapipe_worker.py metadata IN.tflite OUT.tflite LABELS.txt MEAN,MEAN,MEAN STD,STD,STD
      writes IN.tflite with MediaPipe's object-detector metadata to OUT.tflite
  python mediapipe_worker.py detect MODEL.tflite
      then, per image on stdin: one JSON line {"shape": [H, W, 3]} and H*W*3 uint8 RGB bytes;
      answers one JSON line {"seconds": ..., "detections": [[x, y, w, h, score, name], ...]}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def write_metadata(source: str, target: str, labels: str, mean: str, std: str) -> None:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

    names = Path(labels).read_text(encoding="utf-8").splitlines()
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(Path(source).read_bytes()),
        input_norm_mean=[float(v) for v in mean.split(",")],
        input_norm_std=[float(v) for v in std.split(",")],
        labels=metadata_writer.Labels().add(names),
    )
    model, _ = writer.populate()
    Path(target).write_bytes(bytes(model))


def detect(model: str) -> None:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ObjectDetector, ObjectDetectorOptions

    options = ObjectDetectorOptions(
        base_options=BaseOptions(model_asset_path=model), max_results=-1, score_threshold=0.0
    )
    with ObjectDetector.create_from_options(options) as detector:
        print(json.dumps({"ready": True}), flush=True)
        for header in sys.stdin.buffer:
            shape = json.loads(header)["shape"]
            pixels = sys.stdin.buffer.read(shape[0] * shape[1] * shape[2])
            array = np.frombuffer(pixels, np.uint8).reshape(shape)
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(array))
            started = time.perf_counter()
            result = detector.detect(image)
            seconds = time.perf_counter() - started
            # MediaPipe merges detections with identical boxes into one with several categories
            # (per-class NMS reports a box once per class): one entry per category.
            found = [
                [box.origin_x, box.origin_y, box.width, box.height, c.score, c.category_name]
                for d in result.detections
                for box in [d.bounding_box]
                for c in d.categories
            ]
            print(json.dumps({"seconds": seconds, "detections": found}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "metadata":
        write_metadata(*sys.argv[2:7])
    else:
        detect(sys.argv[2])
