"""`tfod export`: a run's checkpoint -> SavedModel, TFLite (fp32, fp16, int8) and ONNX under
RUN/export/.

Built on Model Garden's export libraries (`export_saved_model_lib.export_inference_graph`,
`export_tflite_lib.convert_tflite_model`), with their rough edges fixed here:

- TFLite gets TFLite's own detection post-processing op (`nms_version: tflite`, ~20x faster than
  NMS v2 inside TFLite) running per-class NMS, as the checkpoint's evaluation does (the op's
  default in Model Garden, class-agnostic with 5 classes per box, repeats each box once per
  class), with the same score threshold and detection cap as the SavedModel.
- Model Garden hands the background class to that op, which then returns background boxes as
  detections and lets them suppress real ones; tfod's export gives it the real classes only.
- ONNX is tf2onnx's conversion of the SavedModel (uint8 image in, NMS inside, the SavedModel's
  outputs), run in a child process: the converter's TensorFlow graph and memory go with it.
- int8 is full-integer inside, with float outputs (`int8_full` quantizes `num_detections`, which
  saturates at 15) and float or, with `--io int8|uint8`, integer input. A float run's is
  calibrated on the first N images of the training split as the validation parser sees them:
  Model Garden calibrates on augmented training data, 2000 steps by default, and rewrites the
  experiment's `train_data` while doing it. A QAT run's (`tfod qat`) needs no calibration: its
  ranges were trained, and its export is built with Model Garden's QAT serving module.

Everything is built in a temporary folder that replaces RUN/export/ only when complete. An earlier
export's artefacts that this one does not rebuild are kept when they come from the same
checkpoint, and listed as removed (manifest `removed`) when they come from another one: an export
folder never mixes checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.config.presets import get_preset
from tfod.data.dataset import LABEL_MAP, load_summary
from tfod.errors import TfodError, last_error
from tfod.export import edgetpu
from tfod.export.mediapipe_runtime import write_metadata
from tfod.model.experiment import dataset_dir, load_experiment
from tfod.model.qat_head import prediction_ranges
from tfod.model.quantize import is_qat
from tfod.model.serving import detection_limits, is_yolo, serving_module
from tfod.predict.models import PIXEL_INPUT
from tfod.runs.rundir import RunDir, float_parent, now, pick_checkpoint, versions

EXPORT = "export"
EXPORT_JSON = "export.json"
SAVED_MODEL = "saved_model"
FORMATS = ("saved_model", "tflite", "onnx")
ONNX = "model.onnx"
ONNX_OPSET = 17
"""ONNX Runtime 1.32 runs opset 17 on every provider; tf2onnx 1.17 converts Model Garden's
detectors at it with no unsupported op."""
FAMILY_FORMATS = {
    "retinanet": FORMATS,
    "fasterrcnn": ("saved_model", "onnx"),
    "maskrcnn": ("saved_model", "onnx"),
    "yolo": FORMATS,
}
"""The formats each detector family exports (see NO_TFLITE)."""
NO_TFLITE = (
    "tfod's TFLite models carry TFLite's detection post-processing op, which Model Garden's "
    "RetinaNet has (and tfod gives its YOLOv7) and its Faster and Mask R-CNN (the `maskrcnn` "
    "task, whose detection generator has no `tflite_post_processing`) do not"
)
QUANTS = ("fp32", "fp16", "int8")
IO_TYPES = ("float", "int8", "uint8")
PARENT_INT8 = "parent_int8.tflite"
"""A QAT run's export also holds its float parent's post-training int8, for `verify` to compare."""


def tflite_name(quant: str) -> str:
    return f"model_{quant}.tflite"


def parse_list(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """'a,b' -> ['a', 'b'], each checked against `allowed`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise TfodError(
            f"{option} takes a comma-separated list of {', '.join(allowed)}; got {text!r}"
        )
    return list(dict.fromkeys(items))


def export(
    run: RunDir,
    checkpoint: str = "best",
    formats: list[str] | None = None,
    quants: list[str] | None = None,
    calibration_images: int = 200,
    on_step: Callable[[str], None] | None = None,
    io: str = "float",
    max_cpu_ops: int | None = None,
    metadata: bool = True,
) -> dict[str, Any]:
    """Export `run`'s checkpoint; returns the export.json manifest.

    Args:
        run: the run folder.
        checkpoint: `best` (falls back to `latest` before any evaluation), `latest` or a step.
        formats: some of FORMATS (default: all that the run's family exports, FAMILY_FORMATS).
        quants: TFLite variants, some of QUANTS (default: all).
        calibration_images: training images that calibrate the int8 model.
        on_step: called with a line of text before each slow step.
        io: the int8 model's input type: float, or int8/uint8 for full-integer input (its outputs
            stay float: see `_convert`).
        max_cpu_ops: ops the Edge TPU model may leave to the CPU (None: the post-processing op).
        metadata: add MediaPipe Tasks' object-detector metadata (labels, input, output roles) to
            every TFLite model (see `tfod.export.mediapipe_runtime`).

    Raises:
        TfodError: among others, an Edge TPU model over `max_cpu_ops`, after every artefact is
            written (see `edgetpu.gate`).

    A QAT run (`tfod qat`) exports int8 only, from its fake-quantized weights (no calibration),
    plus its float parent's post-training int8 (`parent_int8.tflite`) for `tfod verify`.
    """
    run.require()
    parent = float_parent(run)
    formats = _family_formats(run, formats)
    quants = quants or (["int8"] if parent else list(QUANTS))
    _check_options(run, parent, quants, calibration_images, io)
    say = on_step or (lambda _: None)
    step, prefix, chosen = pick_checkpoint(run, checkpoint)
    experiment = load_experiment(run)
    data_dir = dataset_dir(experiment)
    summary = load_summary(data_dir)
    size = [int(s) for s in experiment.task.model.input_size[:2]]
    manifest = _new_manifest(run, experiment, summary, {"which": chosen, "step": step}, prefix)
    with atomic.atomic_directory(run.path / EXPORT) as out:
        shutil.copy2(data_dir / LABEL_MAP, out / LABEL_MAP)
        names = [c["name"] for c in summary["classes"]]
        atomic.write_text(out / "labels.txt", "".join(f"{name}\n" for name in names))
        if {"saved_model", "onnx"} & set(formats):
            manifest["artefacts"] += _serving_formats(experiment, prefix, size, formats, out, say)
        if "tflite" in formats:
            train_images = int(summary["splits"].get("train", {}).get("images", 0))
            calibration = min(calibration_images, train_images)
            labels = names if metadata else None
            tflite = _tflite(run, prefix, quants, calibration, io, out, say, labels)
            if parent is not None:
                say("the float parent's post-training int8, for `tfod verify` to compare")
                _, parent_prefix = parent.checkpoint("latest")
                tflite += _tflite(
                    parent, parent_prefix, ["int8"], calibration, io, out, say, labels, True
                )
            manifest["artefacts"].extend(tflite)
            if "int8" in quants:
                _edgetpu(manifest, out, max_cpu_ops, say)
        _carry_over(run, manifest, out, say)
        atomic.write_json(out / EXPORT_JSON, manifest)
    if manifest.get("edgetpu", {}).get("gate"):  # after the export is in place: it is kept
        raise TfodError(manifest["edgetpu"]["gate"], run.path / EXPORT)
    return manifest


def _new_manifest(
    run: RunDir, experiment: Any, summary: dict[str, Any], chosen: dict[str, Any], prefix: Path
) -> dict[str, Any]:
    """export.json before its artefacts: the run, its checkpoint, the model's input and output."""
    score_threshold, max_detections = detection_limits(experiment)
    return {
        "created": now(),
        "run": run.name,
        "checkpoint": {**chosen, "path": str(prefix)},
        "input_size": [int(s) for s in experiment.task.model.input_size[:2]],
        "score_threshold": score_threshold,
        "max_detections": max_detections,
        "label_map": LABEL_MAP,
        "classes": summary["classes"],
        "versions": versions(),
        "artefacts": [],
    }


def _family_formats(run: RunDir, formats: list[str] | None) -> list[str]:
    """`formats`, or by default all that the run's detector family exports (FAMILY_FORMATS)."""
    family = get_preset(str(run.read().get("plan", {}).get("preset"))).family
    supported = FAMILY_FORMATS[family]
    if formats is None:
        return list(supported)
    unsupported = [f for f in formats if f not in supported]
    if unsupported:
        raise TfodError(
            f"a {family} run exports {', '.join(supported)}, not {', '.join(unsupported)}: "
            f"{NO_TFLITE}",
            "--format",
        )
    return formats


def _check_options(
    run: RunDir, parent: RunDir | None, quants: list[str], calibration_images: int, io: str
) -> None:
    if calibration_images < 1:
        raise TfodError("--calibration-images must be at least 1")
    if io not in IO_TYPES:
        raise TfodError(f"--io takes one of {', '.join(IO_TYPES)}; got {io!r}")
    if parent is not None and quants != ["int8"]:
        raise TfodError(
            "a QAT run exports --quant int8 only (its weights are trained as int8 values); "
            f"export fp32 or fp16 from its float parent, {run.read()['qat']['parent']}",
            run.path,
        )


def _serving_formats(
    experiment: Any,
    prefix: Path,
    size: list[int],
    formats: list[str],
    out: Path,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The SavedModel and/or its ONNX conversion (which needs the SavedModel written first)."""
    say(f"SavedModel from {prefix.name}")
    saved = _saved_model(experiment, prefix, size, out)
    artefacts = [saved] if "saved_model" in formats else []
    if "onnx" in formats:
        say(f"ONNX (opset {ONNX_OPSET}) from the SavedModel, by tf2onnx")
        artefacts.append(_onnx(out / SAVED_MODEL, out))
    if "saved_model" not in formats:
        shutil.rmtree(out / SAVED_MODEL)
    return artefacts


def _edgetpu(
    manifest: dict[str, Any], out: Path, max_cpu_ops: int | None, say: Callable[[str], None]
) -> None:
    """The Edge TPU model of the int8 TFLite, when the compiler is installed, and its gate."""
    manifest["edgetpu"] = edgetpu.compile_for_edgetpu(out / tflite_name("int8"), say)
    if manifest["edgetpu"].get("artefact"):
        manifest["artefacts"].append(manifest["edgetpu"].pop("artefact"))
    failed = edgetpu.gate(manifest["edgetpu"], max_cpu_ops)
    if failed:
        manifest["edgetpu"]["gate"] = failed


def _carry_over(
    run: RunDir, manifest: dict[str, Any], out: Path, say: Callable[[str], None]
) -> None:
    """Keep the previous export's artefacts that this export did not rebuild, if they come from
    the same checkpoint; otherwise record (and say) that they are gone."""
    try:
        previous = read_manifest(run)
    except TfodError:
        return
    built = {a["file"] for a in manifest["artefacts"]}
    same = previous.get("checkpoint", {}).get("path") == manifest["checkpoint"]["path"]
    for item in previous.get("artefacts", []):
        name = str(item.get("file", ""))
        source = run.path / EXPORT / name
        if not name or name in built or not source.exists():
            continue
        if same:
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, out / name)
            manifest["artefacts"].append(item)
            say(f"kept {name} from the previous export of the same checkpoint")
        else:
            manifest.setdefault("removed", []).append(name)
            step = previous.get("checkpoint", {}).get("step")
            say(f"removed {name}: it was exported from another checkpoint (step {step})")


def read_manifest(run: RunDir) -> dict[str, Any]:
    path = run.path / EXPORT / EXPORT_JSON
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TfodError("run has no export yet: run `tfod export` first", run.path) from None
    except (OSError, json.JSONDecodeError) as err:
        raise TfodError(f"cannot read the export manifest: {err}", path) from err
    return manifest


def _artefact(path: Path, out: Path, **fields: Any) -> dict[str, Any]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return {
        "file": str(path.relative_to(out)),
        "bytes": sum(p.stat().st_size for p in files),
        **fields,
    }


def _saved_model(experiment: Any, prefix: Path, size: list[int], out: Path) -> dict[str, Any]:
    from official.vision.serving import export_saved_model_lib

    started = time.perf_counter()
    export_saved_model_lib.export_inference_graph(
        input_type="image_tensor",
        batch_size=1,
        input_image_size=size,
        params=experiment,
        checkpoint_path=None,  # read by serving_module: the weights' averages if trained (train.ema)
        export_dir=str(out / SAVED_MODEL),
        export_module=serving_module(experiment, "image_tensor", prefix),
    )
    qat = is_qat(experiment.task)
    return _artefact(
        out / SAVED_MODEL, out,
        format="saved_model", quantization="fp32", input={"shape": [1, None, None, 3], "dtype": "uint8"},
        seconds=round(time.perf_counter() - started, 1),
        **({"method": "QAT, fake-quantized"} if qat else {}),
    )  # fmt: skip


def _onnx(saved: Path, out: Path) -> dict[str, Any]:
    """tf2onnx's conversion of the SavedModel at `saved` to out/ONNX; a TfodError quoting the
    converter's own error (an unsupported op, say) if it fails."""
    import importlib.metadata
    import subprocess
    import sys

    try:
        converter = f"tf2onnx {importlib.metadata.version('tf2onnx')}"
    except importlib.metadata.PackageNotFoundError:
        raise TfodError(
            "ONNX export needs tf2onnx: pip install tf2onnx onnxruntime (or leave onnx out of "
            "--format)"
        ) from None
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
        "--output", str(out / ONNX), "--opset", str(ONNX_OPSET),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out / ONNX).is_file():
        why = last_error(done.stderr, f"exit status {done.returncode}")
        raise TfodError(f"{converter} could not convert the SavedModel to ONNX: {why}")
    return _artefact(
        out / ONNX, out,
        format="onnx", quantization="fp32", input={"shape": [1, None, None, 3], "dtype": "uint8"},
        opset=ONNX_OPSET, converter=converter, seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip


def _tflite(
    run: RunDir,
    prefix: Path,
    quants: list[str],
    calibration: int,
    io: str,
    out: Path,
    say: Callable[[str], None],
    labels: list[str] | None,
    is_parent: bool = False,
) -> list[dict[str, Any]]:
    """TFLite models of `run`'s checkpoint `prefix`. A QAT run's int8 comes from its trained
    fake-quantization ranges; a float run's is calibrated on `calibration` training images.
    `labels`: the class names to write into each model's metadata (None: no metadata).
    `is_parent`: `run` is a QAT run's float parent (RUN/parent); its int8 is PARENT_INT8."""
    from official.vision.serving import export_saved_model_lib

    experiment = load_experiment(run)
    qat = is_qat(experiment.task)
    size = [int(s) for s in experiment.task.model.input_size[:2]]
    if not is_yolo(experiment):  # YOLO's serving module has its own (model.serving)
        _use_tflite_post_processing(experiment.task.model.detection_generator)
    graph = out / ".tflite-graph"  # inside the temporary export folder; removed below
    artefacts = []
    try:
        say(f"TFLite graph of {prefix.name} (TFLite detection post-processing op)")
        served = _pixel_input(serving_module(experiment, "tflite", prefix), qat)
        ranges = prediction_ranges(served.model.head) if qat else None
        with _nms_without_background(ranges):
            export_saved_model_lib.export_inference_graph(
                input_type="tflite", batch_size=1, input_image_size=size,
                params=experiment, checkpoint_path=None, export_dir=str(graph),
                export_module=served,
            )  # fmt: skip
        for quant in quants:
            method = "post-training" if quant == "int8" and not qat else None
            say(
                f"TFLite {quant}"
                + (" (quantization-aware trained)" if qat else "")
                + (f" (calibrating on {calibration} training images)" if method else "")
            )
            started = time.perf_counter()
            model = _convert(graph, quant, io, _calibration_experiment(run) if method else None,
                             calibration)  # fmt: skip
            path = out / (PARENT_INT8 if is_parent else tflite_name(quant))
            atomic.write_bytes(path, model)
            dtype = io if quant == "int8" and io != "float" else "float32"
            fields: dict[str, Any] = {
                "format": "tflite",
                "quantization": quant,
                "input": {"shape": [1, *size, 3], "dtype": dtype, "name": PIXEL_INPUT},
                "seconds": round(time.perf_counter() - started, 1),
            }
            if quant == "int8":
                fields["method"] = "quantization-aware training" if qat else "post-training"
            if method:
                fields["calibration_images"] = calibration
            if is_parent:
                fields["source"] = f"float parent {prefix.name}"
            if labels is not None:
                fields["metadata"] = write_metadata(path, labels, path.name, say)
            artefacts.append(_artefact(path, out, **fields))
    finally:
        shutil.rmtree(graph, ignore_errors=True)
    return artefacts


def _use_tflite_post_processing(detection: Any) -> None:
    """TFLite's own detection op, per class, with the SavedModel's threshold and cap."""
    detection.nms_version = "tflite"
    detection.tflite_post_processing.override(
        {
            "max_classes_per_detection": 1,
            "use_regular_nms": True,
            "detections_per_class": detection.max_num_detections,
            "max_detections": detection.max_num_detections,
            "nms_score_threshold": detection.pre_nms_score_threshold,
            "nms_iou_threshold": detection.nms_iou_threshold,
            "normalize_anchor_coordinates": True,  # boxes 0..1, as MediaPipe Tasks reads them
        }
    )


def _convert(graph: Path, quant: str, io: str, calibration: Any, steps: int) -> bytes:
    """One TFLite variant of the graph. int8 is full-integer inside: a float graph is calibrated on
    `calibration`'s train_data and restricted to TFLite's int8 builtins; a QAT graph (no
    `calibration`) carries its trained ranges, and the converter quantizes every op it covers
    (TFLite asks for a calibration set when the int8 builtins are enforced, so they are not: the
    tests check that only the post-processing op and its dequantize inputs stay float).

    The outputs stay float32 whatever `io` is: they come from the detection post-processing op,
    and quantizing them (Model Garden's `int8_full` or `qat` types) makes `num_detections` an
    8-bit value that saturates (measured: 15 detections at most).
    """
    import tensorflow as tf
    from official.vision.serving import export_tflite_lib

    if quant != "int8":
        model: bytes = export_tflite_lib.convert_tflite_model(
            saved_model_dir=str(graph), quant_type="fp16" if quant == "fp16" else None
        )
        return model
    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration is not None:
        converter.representative_dataset = functools.partial(_pixels, calibration, steps)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]
    converter.inference_output_type = tf.float32
    result: bytes = converter.convert()
    return result


def _pixel_input(served: Any, qat: bool) -> Any:
    """`served` (input type tflite) taking RGB pixels 0..255 as input PIXEL_INPUT, normalised
    inside the graph (one multiply-add): MediaPipe Tasks, which apps load models with, cannot
    normalise per channel, and a uint8 model then takes a camera frame's bytes as they are.

    A QAT graph is quantized from its fake-quantization ranges alone (no calibration), so `qat`
    gives the pixels and each step of the normalisation theirs: 0..255, then the ranges the
    multiply and the add can reach over the three channels."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    if is_yolo(served.params):  # YOLO's module takes pixels and divides them by 255 itself
        size = served.input_signature.shape
        served.input_signature = tf.TensorSpec(size, tf.float32, name=PIXEL_INPUT)
        return served
    mean, std = preprocess_ops.MEAN_RGB, preprocess_ops.STDDEV_RGB
    scale = [1.0 / s for s in std]
    offset = [-m / s for m, s in zip(mean, std, strict=True)]
    reach = {
        "pixels": (0.0, 255.0),
        "scaled": (0.0, 255.0 * max(scale)),
        "normalised": (min(offset), max(255.0 * a + b for a, b in zip(scale, offset, strict=True))),
    }

    def quantized(values: Any, step: str) -> Any:
        low, high = reach[step]
        return (
            tf.quantization.fake_quant_with_min_max_args(values, min=low, max=high)
            if qat
            else values
        )

    def inference_for_tflite(pixels: Any) -> Any:
        scaled = quantized(quantized(pixels, "pixels") * tf.constant(scale), "scaled")
        return served.serve(quantized(scaled + tf.constant(offset), "normalised"))

    served.inference_for_tflite = tf.function(inference_for_tflite)
    return served


def _pixels(calibration: Any, steps: int) -> Iterator[list[Any]]:
    """Model Garden's calibration images (normalised by its input pipeline: ImageNet's mean and
    deviation, YOLO's / 255) as RGB pixels."""
    import tensorflow as tf
    from official.core import task_factory
    from official.vision.ops import preprocess_ops
    from official.vision.serving import export_tflite_lib

    mean, std = tf.constant(preprocess_ops.MEAN_RGB), tf.constant(preprocess_ops.STDDEV_RGB)
    if is_yolo(calibration):
        mean, std = tf.constant(0.0), tf.constant(255.0)
    task = task_factory.get_task(calibration.task)  # Model Garden builds no YOLO task itself
    images = export_tflite_lib.representative_dataset(calibration, task, calibration_steps=steps)
    for (image,) in images:
        yield [image * std + mean]


def _calibration_experiment(run: RunDir) -> Any:
    """The experiment with `train_data` reading the training split the way validation does
    (no augmentation, no shuffling): what Model Garden's calibration reads and rewrites."""
    experiment = load_experiment(run)
    train_path = experiment.task.train_data.input_path
    experiment.task.train_data = experiment.task.validation_data
    experiment.task.train_data.override({"input_path": train_path, "global_batch_size": 1})
    return experiment


@contextlib.contextmanager
def _nms_without_background(
    ranges: dict[str, tuple[float, float]] | None = None,
) -> Iterator[None]:
    """Hand Model Garden's TFLite NMS op the real classes only (no background column).

    `ranges`: a QAT model's union of the levels' prediction ranges (tfod.model.qat_head.
    prediction_ranges), into which every level is fake-quantized before the concatenation, so the
    converter requantizes each level into it rather than into one level's range. (Right after the
    level's own fake-quantization or a reshape, a second one breaks the converter's same-scale
    rule; after a slice it is a requantize op.)"""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator as module

    original = module._generate_detections_tflite

    def per_anchor(raw: Any, anchors: int, first: int, name: str) -> Any:
        """`raw`'s channels from `first` on, for each anchor (and in `ranges[name]`)."""
        height, width, channels = raw.get_shape().as_list()[1:]
        per = channels // anchors
        kept = tf.reshape(raw, [-1, height, width, anchors, per])[..., first:per]
        if ranges is not None:
            low, high = ranges[name]
            kept = tf.quantization.fake_quant_with_min_max_args(kept, min=low, max=high)
        return tf.reshape(kept, [-1, height, width, anchors * (per - first)])

    def without_background(
        raw_boxes: Any, raw_scores: Any, anchor_boxes: Any, config: Any, *args: Any, **kw: Any
    ) -> Any:
        levels = sorted(raw_scores, key=int)
        anchors = raw_boxes[levels[0]].get_shape().as_list()[-1] // 4
        scores = {level: per_anchor(raw_scores[level], anchors, 1, "scores") for level in levels}
        if ranges is not None:
            raw_boxes = {lv: per_anchor(raw_boxes[lv], anchors, 0, "boxes") for lv in levels}
        return original(raw_boxes, scores, anchor_boxes, config, *args, **kw)

    module._generate_detections_tflite = without_background
    try:
        yield
    finally:
        module._generate_detections_tflite = original
