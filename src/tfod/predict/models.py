"""Detection models behind one call: a run's checkpoint, an exported SavedModel, ONNX or .tflite file.

Every model answers `detect(image)` for one uint8 RGB image [H, W, 3] with boxes in that image's
pixels (ymin, xmin, ymax, xmax, clipped to the image), scores, and class ids 1..N, whatever the
artefact's own conventions are. Model Garden's TFLite post-processing, for one, returns boxes in
resized-input pixels, unclipped; the SavedModel and the checkpoint return them in resized pixels
with the resize factor in `image_info`. Each model also records how long its own invocation took
(the network and NMS, not the image decoding or drawing), for latency tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tfod.data.dataset import LABEL_MAP
from tfod.data.labelmap import read_label_map
from tfod.data.masks import encode_rle, paste
from tfod.errors import TfodError


@dataclass(frozen=True)
class Detections:
    """One image's detections, in that image's pixels."""

    boxes: np.ndarray  # [N, 4] float32: ymin, xmin, ymax, xmax
    scores: np.ndarray  # [N] float32, descending
    classes: np.ndarray  # [N] int64, 1..num_classes
    masks: np.ndarray | None = None  # [N, H, W] uint8 0/1 (a Mask R-CNN's)

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        masks = self.masks[keep] if self.masks is not None else None
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], masks)

    def coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results entries ([x, y, width, height]; a mask as COCO RLE `segmentation`)."""
        results = [
            {
                "image_id": image_id,
                "category_id": int(cls),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "score": float(score),
            }
            for (y0, x0, y1, x1), score, cls in zip(
                self.boxes, self.scores, self.classes, strict=True
            )
        ]
        if self.masks is not None:
            for result, pixels in zip(results, self.masks, strict=True):
                result["segmentation"] = encode_rle(pixels)
        return results


class DetectionModel(Protocol):
    name: str
    labels: dict[int, str]
    invoke_seconds: list[float]
    latency_seconds: list[float]

    def detect(self, image: np.ndarray) -> Detections: ...


def to_original(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    scale: np.ndarray,
    shape: Any,
    masks: np.ndarray | None = None,
) -> Detections:
    """Boxes in resized pixels -> original pixels, clipped; empty boxes dropped, and class 0 (a
    YOLO's unused first class, which only an untrained model reports). A Mask R-CNN's
    box-relative `masks` are pasted on the original image."""
    height, width = shape[:2]
    boxes = boxes.astype(np.float32) / np.tile(scale.astype(np.float32), 2)
    boxes = np.clip(boxes, 0.0, [height, width, height, width]).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (np.rint(classes) >= 1)
    order = np.argsort(-scores[keep], kind="stable")
    boxes = boxes[keep][order]
    if masks is not None:
        xywh = np.stack(
            [boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], 1
        )
        masks = paste(masks[keep][order], xywh, height, width)
    return Detections(
        boxes,
        scores[keep][order].astype(np.float32),
        np.rint(classes[keep][order]).astype(np.int64),
        masks,
    )


def check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")


class _ServingModel:
    """A Model Garden detection serving function, run by TensorFlow or ONNX Runtime: uint8
    [1, H, W, 3] -> arrays detection_boxes, _scores, _classes, num_detections and image_info."""

    def __init__(self, name: str, serve: Any, labels: dict[int, str]) -> None:
        self.name = name
        self.labels = labels
        self.invoke_seconds: list[float] = []
        self.latency_seconds: list[float] = []
        self._serve = serve

    def detect(self, image: np.ndarray) -> Detections:
        check_image(image)
        started = time.perf_counter()
        out = self._serve(image[None])
        self.invoke_seconds.append(time.perf_counter() - started)
        n = int(out["num_detections"][0])
        found = to_original(
            out["detection_boxes"][0, :n],
            out["detection_scores"][0, :n],
            out["detection_classes"][0, :n],
            out["image_info"][0, 2, :],
            image.shape,
            out["detection_masks"][0, :n] if "detection_masks" in out else None,
        )
        self.latency_seconds.append(time.perf_counter() - started)
        return found


def checkpoint_model(
    experiment: Any, prefix: Path, labels: dict[int, str], name: str = "checkpoint"
) -> _ServingModel:
    """The float model of a training checkpoint, served exactly as the SavedModel export is."""
    import tensorflow as tf

    from tfod.model.serving import serving_module

    module = serving_module(experiment, "image_tensor", prefix)
    traced = module.serve if hasattr(module.serve, "get_concrete_function") else (
        tf.function(module.serve)
    )  # YOLO's serving module traces its own  # fmt: skip
    serve = traced.get_concrete_function(tf.TensorSpec([1, None, None, 3], tf.uint8))
    return _ServingModel(name, _numpy(serve), labels)


def _numpy(serve: Any) -> Any:
    """A TensorFlow serving function as numpy in, numpy out."""
    import tensorflow as tf

    def call(images: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value.numpy() for key, value in serve(tf.constant(images)).items()}

    return call


def saved_model(path: Path, labels: dict[int, str] | None = None) -> _ServingModel:
    """A SavedModel with Model Garden's `image_tensor` serving signature."""
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise TfodError("not a SavedModel folder (no saved_model.pb)", path)
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise TfodError("SavedModel has no serving_default signature", path)
    (input_name,) = signature.structured_input_signature[1]

    def serve(images: Any) -> Any:
        return signature(**{input_name: images})

    return _ServingModel(path.name, _numpy(serve), labels or find_labels(path))


def onnx_model(path: Path, labels: dict[int, str] | None = None, threads: int = 1) -> _ServingModel:
    """An ONNX detector exported by `tfod export --format onnx`, run by ONNX Runtime's CPU provider
    (`threads` intra-op threads, one by default as for TFLite, so the latency columns compare)."""
    try:
        import onnxruntime
    except ImportError:
        raise TfodError("ONNX Runtime is not installed: pip install onnxruntime", path) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise TfodError(f"not an ONNX model ONNX Runtime can load: {err}", path) from err
    (feed,) = session.get_inputs()
    names = [output.name for output in session.get_outputs()]
    wanted = {
        "detection_boxes",
        "detection_scores",
        "detection_classes",
        "num_detections",
        "image_info",
    }
    if not wanted <= set(names):
        raise TfodError(
            f"ONNX model has outputs {sorted(names)}, not a tfod detector ({', '.join(sorted(wanted))}); "
            "export it with `tfod export --format onnx`",
            path,
        )

    def serve(images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {feed.name: images}), strict=True))

    return _ServingModel(path.name, serve, labels or find_labels(path))


PIXEL_INPUT = "pixels"
"""The input name of tfod's TFLite exports: RGB pixels 0..255, normalised inside the model."""


class TFLiteModel:
    """A .tflite detector with TFLite's detection post-processing op (Model Garden's export).

    Its input is the image already resized (aspect kept, padded at the bottom and right with the
    mean pixel, as in training), as float32 or quantized to int8/uint8 with the input's scale and
    zero point; this class does that with Model Garden's own preprocessing ops, so every artefact
    sees the same pixels. tfod's export names that input PIXEL_INPUT and takes RGB values 0..255,
    normalising them inside the graph (so a uint8 model takes a camera frame's bytes as they are);
    Model Garden's own export takes them normalised, under another name.

    Its boxes are normalised to the input (tfod's export, as MediaPipe Tasks reads them) or in input
    pixels (Model Garden's); the post-processing op's anchors tell which.

    One thread by default: LiteRT 2.3.0's regular (per-class) NMS loses whole classes when the
    interpreter runs with more than one thread (measured: the last of 3 classes vanished with 2).

    LiteRT runs a model on its default CPU delegate, XNNPACK, as a phone's app does. A model that
    XNNPACK cannot prepare runs on LiteRT's own kernels instead, and `delegate_problem` says why
    (see `xnnpack_problem`).
    """

    def __init__(self, path: Path, labels: dict[int, str] | None = None, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.name = path.name
        self.labels = labels or find_labels(path)
        self.invoke_seconds: list[float] = []
        self.latency_seconds: list[float] = []
        self.delegate_problem = xnnpack_problem(path, threads)
        resolver = OpResolverType.AUTO
        if self.delegate_problem:
            resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interpreter = Interpreter(
                model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver
            )
        except (ValueError, RuntimeError) as err:
            raise TfodError(f"not a TFLite model LiteRT can load: {err}", path) from err
        if self.delegate_problem and (empty := empty_ranges(self._interpreter)):
            self.delegate_problem += (
                f"; {len(empty)} int8 tensor(s) have a range of about zero, e.g. {empty[0]}: "
                "all zero on the calibration images, calibrate on more"
            )
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise TfodError("TFLite model has no signature", path)
        key = next(iter(signatures))
        self._runner = self._interpreter.get_signature_runner(key)
        (self._input_name,) = signatures[key]["inputs"]
        details = self._runner.get_input_details()[self._input_name]
        outputs = set(signatures[key]["outputs"])
        wanted = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
        if not wanted <= outputs:
            raise TfodError(
                f"TFLite model has outputs {sorted(outputs)}, not a detector with NMS "
                f"({', '.join(sorted(wanted))}); export it with `tfod export`",
                path,
            )
        if details["dtype"] not in (np.float32, np.int8, np.uint8):
            raise TfodError(
                f"TFLite model takes {np.dtype(details['dtype']).name} input; tfod runs models with "
                "float, int8 or uint8 input (`tfod export --io`)",
                path,
            )
        self._input_type = np.dtype(details["dtype"])
        self._input_scale, self._input_zero = details["quantization"]
        self.input_size = (int(details["shape"][1]), int(details["shape"][2]))
        self.pixel_input = self._input_name == PIXEL_INPUT
        self._class_offset, self._box_scale = self._read_post_processing()

    def _read_post_processing(self) -> tuple[int, np.ndarray]:
        """(`_nms_class_offset`, what turns the op's boxes into input pixels)."""
        pixels = np.ones(4, np.float32)
        ops = self._interpreter._get_ops_details()
        # A constant's tensor, or (fp16 models) the constant its DEQUANTIZE op reads.
        made_by = {o["outputs"][0]: o["inputs"][0] for o in ops if o["op_name"] == "DEQUANTIZE"}
        for op in ops:
            if op["op_name"] == "TFLite_Detection_PostProcess":
                source = made_by.get(op["inputs"][2], op["inputs"][2])
                anchors = self._interpreter.get_tensor(source)  # y, x centre; h, w
                if np.abs(anchors[:, :2]).max() <= NORMALISED_LIMIT:
                    height, width = self.input_size
                    pixels = np.array([height, width, height, width], np.float32)
        return self._nms_class_offset(), pixels

    def _nms_class_offset(self) -> int:
        """What to add to the NMS op's class index to get the label id.

        Model Garden scores the background as class 0 and its TFLite export hands all classes to
        the NMS op, which then reports background boxes as class 0 (index = label id, offset 0).
        tfod's export gives the op the real classes only: index 0 is label 1 (offset 1).
        """
        for op in self._interpreter._get_ops_details():
            if op["op_name"] == "TFLite_Detection_PostProcess":
                scores = self._interpreter.get_tensor_details()[op["inputs"][1]]
                return 0 if self.labels and scores["shape"][-1] == len(self.labels) + 1 else 1
        return 1

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input tensor [1, H, W, 3], (y, x) resize factor) for `image`."""
        import tensorflow as tf
        from official.vision.ops import preprocess_ops

        scale = (1.0, 1.0, 1.0) if self.pixel_input else preprocess_ops.STDDEV_RGB
        pixels = preprocess_ops.normalize_image(
            tf.convert_to_tensor(image, tf.float32), offset=preprocess_ops.MEAN_RGB, scale=scale
        )
        resized, info = preprocess_ops.resize_and_crop_image(
            pixels, list(self.input_size), padded_size=list(self.input_size)
        )  # padded with zeros: the mean pixel
        tensor = resized.numpy()[None].astype(np.float32)
        if self.pixel_input:
            tensor = tensor + np.array(preprocess_ops.MEAN_RGB, np.float32)
        if self._input_type != np.float32:  # full-integer input: quantize the normalised pixels
            limits = np.iinfo(self._input_type)
            steps = np.rint(tensor / self._input_scale) + self._input_zero
            tensor = np.clip(steps, limits.min, limits.max).astype(self._input_type)
        return tensor, info.numpy()[2]

    def detect(self, image: np.ndarray) -> Detections:
        check_image(image)
        begun = time.perf_counter()
        tensor, scale = self.preprocess(image)
        started = time.perf_counter()
        out = self._runner(**{self._input_name: tensor})
        self.invoke_seconds.append(time.perf_counter() - started)
        n = round(float(out["num_detections"].reshape(-1)[0]))
        classes = out["detection_classes"][0, :n] + self._class_offset
        real = classes >= 1  # drops background boxes of exports that kept class 0
        found = to_original(
            out["detection_boxes"][0, :n][real] * self._box_scale,
            out["detection_scores"][0, :n][real],
            classes[real],
            scale,
            image.shape,
        )
        self.latency_seconds.append(time.perf_counter() - begun)
        return found


NORMALISED_LIMIT = 2.0
"""Anchor centres at most this far from 0 are normalised to the input (tfod's export: 0..1);
in input pixels they reach the input size (at least 32)."""

XNNPACK_PROBE = """
import sys
from ai_edge_litert.interpreter import Interpreter
Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2])).allocate_tensors()
"""
XNNPACK_PROBE_SECONDS = 300
EMPTY_RANGE_SCALE = 1e-6
"""An int8 scale below this is a range of about zero (measured: 7.8e-9 for a squeeze-excitation
ReLU that was 0 on the one calibration image; the smallest real scale in that model, 2.5e-4)."""


def empty_ranges(interpreter: Any) -> list[str]:
    """Names of a LiteRT interpreter's integer tensors whose quantization range is about zero (the
    converter's floor for a range that was [0, 0] in calibration): XNNPACK cannot requantize into
    them."""
    return [
        t["name"].split(";")[0]
        for t in interpreter.get_tensor_details()
        if t["dtype"] in (np.int8, np.uint8) and 0 < t["quantization"][0] < EMPTY_RANGE_SCALE
    ]


def xnnpack_problem(path: Path, threads: int = 1) -> str:
    """Why LiteRT's default CPU delegate (XNNPACK) cannot run the .tflite at `path` ("": it can).

    Asked of a child process: where XNNPACK fails to prepare a model, LiteRT 2.3 aborts the whole
    process ("double free or corruption") instead of raising. Measured on SpineNet-Mobile's
    post-training int8 calibrated on 1 image, with uint8 input; an app on a phone, whose LiteRT
    uses XNNPACK by default, would fail the same way.
    """
    import subprocess
    import sys

    try:
        probe = subprocess.run(
            [sys.executable, "-c", XNNPACK_PROBE, str(path), str(threads)],
            capture_output=True, text=True, timeout=XNNPACK_PROBE_SECONDS, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"XNNPACK did not prepare it in {XNNPACK_PROBE_SECONDS} s"
    if probe.returncode == 0:
        return ""
    lines = [line for line in probe.stderr.splitlines() if line.strip() and "INFO:" not in line]
    why = lines[-1].strip() if lines else f"exit status {probe.returncode}"
    if probe.returncode < 0:
        return f"LiteRT aborts while its default CPU delegate, XNNPACK, prepares it ({why})"
    return f"LiteRT's default CPU delegate, XNNPACK, cannot prepare it ({why})"


def find_labels(model_path: Path) -> dict[int, str]:
    """Class names from the label map beside an exported model (or inside a SavedModel folder)."""
    for folder in (model_path.parent, model_path):
        candidate = folder / LABEL_MAP
        if candidate.is_file():
            return read_label_map(candidate)
    return {}
