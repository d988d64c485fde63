"""tfod as a library: what each `tfod` command runs, for notebooks and scripts (docs/python.md).

Each function does what its command does: it shows the same progress bars and tables (in Jupyter
too) and raises `tfod.TfodError` where the command prints `error:`. It returns what a notebook
wants next: the dataset summary, the run, the metrics, the export manifest, the verified rows, a
model to call `detect` on. TensorFlow is imported inside the functions, so `import tfod` is quick.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from tfod.console import console, native_output_to
from tfod.errors import TfodError
from tfod.runs.rundir import RunDir

if TYPE_CHECKING:
    from tfod.config.schema import TfodConfig
    from tfod.export.verify import Verified
    from tfod.predict.models import DetectionModel
    from tfod.predict.predict import Prediction
    from tfod.train.trainer import TrainResult

PathLike = str | Path


def demo_data(
    out: PathLike = "data/demo", n: int = 160, seed: int = 0, masks: bool = False
) -> dict[str, Any]:
    """Generate the synthetic shapes dataset into `out` (`tfod data demo`), with each object's
    visible pixels as its mask if `masks`; returns its summary (the content of `dataset.json`)."""
    from tfod.data.demo import make_demo
    from tfod.data.report import print_summary

    summary = make_demo(Path(out), n=n, seed=seed, masks=masks)
    print_summary(console, summary)
    return summary


def convert(
    src: PathLike,
    out: PathLike,
    format: str = "auto",
    val_fraction: float | None = None,
    seed: int = 0,
    strict: bool = False,
    workers: int | None = None,
    classes: Sequence[str] | None = None,
    difficult: str = "ignore",
) -> dict[str, Any]:
    """Convert VOC, COCO, YOLO or CSV annotations in `src` into the dataset folder `out`
    (`tfod data convert`); returns its summary (the content of `dataset.json`)."""
    from tfod.data.convert import ConvertOptions
    from tfod.data.convert import convert as run_convert
    from tfod.data.report import print_summary

    options = ConvertOptions(
        format=format,
        val_fraction=val_fraction,
        seed=seed,
        strict=strict,
        workers=workers,
        classes=tuple(classes) if classes is not None else None,
        difficult=difficult,
    )
    summary = run_convert(Path(src), Path(out), options)
    print_summary(console, summary)
    return summary


def init(
    data: PathLike,
    out: PathLike = "tfod.yaml",
    preset: str | None = None,
    name: str | None = None,
    force: bool = False,
    pretrained: str | None = None,
    time: str | None = None,
    target: str = "phone",
) -> Path:
    """Write a commented tfod.yaml for the dataset folder `data` (`tfod init`): `preset` (default:
    the family that scored best for the training budget `time` on `target`, "phone" or "server",
    and its preset for the dataset's object sizes), or a fine-tuning recipe from the zoo entry
    `pretrained`. `time` (e.g. "10m") becomes the file's training budget. Returns its path."""
    from tfod.config.template import write_template

    out = Path(out)
    write_template(out, Path(data), preset, name, force, pretrained, time, target)
    return out


def train(
    config: PathLike | TfodConfig,
    run: str | None = None,
    runs_dir: PathLike = "runs",
    steps: int | None = None,
    batch_size: int | None = None,
    time: str | None = None,
    eval: bool = True,
) -> TrainResult:
    """Train (or resume) a run from a tfod.yaml path or a loaded config (`tfod train`).

    `time` ("10m", "90s", "1.5h") is a wall-clock budget instead of steps: steps and schedule are
    fitted to end on time. Returns the run (`.run.path`), its status ("finished", or "stopped"
    after Ctrl-C, resumable by calling again), its step and its last evaluation."""
    from tfod.config.schema import TfodConfig, load_config, parse_duration
    from tfod.train.trainer import train as run_training

    settings = config if isinstance(config, TfodConfig) else load_config(Path(config))
    if time is not None:
        if steps is not None:
            raise TfodError("steps and time are both given; a run has one or the other")
        parse_duration(time)
        timed = settings.train.model_copy(update={"time": time, "steps": None})
        settings = settings.model_copy(update={"train": timed})
    result = run_training(settings, Path(runs_dir), run, steps, batch_size, inline_eval=eval)
    _show_last_eval(result)
    return result


def qat(
    parent: PathLike,
    run: str | None = None,
    steps: int | None = None,
    checkpoint: str = "best",
    eval: bool = True,
) -> TrainResult:
    """Quantization-aware training from the float run `parent`'s checkpoint, into a new run beside
    it (`tfod qat`); `export` then builds its int8 TFLite."""
    from tfod.train.qat import qat_config
    from tfod.train.trainer import train as run_training

    if steps is not None and steps < 1:
        raise TfodError(f"steps must be a whole number of at least 1, got {steps}")
    parent = Path(parent)
    config = qat_config(RunDir(parent), run, steps, checkpoint)
    result = run_training(config, parent.parent, config.name, inline_eval=eval)
    _show_last_eval(result)
    return result


def _show_last_eval(result: TrainResult) -> None:
    from tfod.evaluate.report import print_metrics

    if result.last_eval is not None:
        print_metrics(console, result.last_eval)


def evaluate(run: PathLike, checkpoint: str = "latest") -> dict[str, Any]:
    """COCO metrics of one of `run`'s checkpoints ("latest", "best" or a step number) on its
    validation split (`tfod eval`): the row `eval.jsonl` gets, with "metrics" and "per_class"."""
    from tfod.evaluate.evaluator import RunEvaluator
    from tfod.evaluate.report import print_metrics

    run_dir = RunDir(Path(run))
    step, prefix = run_dir.require().checkpoint(checkpoint)  # checked before building a model
    with native_output_to(run_dir.path / "eval.log"):
        row = RunEvaluator(run_dir).evaluate(step, prefix)
    print_metrics(console, row)
    return row


def export(
    run: PathLike,
    checkpoint: str = "best",
    formats: str | Sequence[str] | None = None,
    quants: str | Sequence[str] | None = None,
    calibration_images: int = 200,
    io: str = "float",
    max_cpu_ops: int | None = None,
    metadata: bool = True,
) -> dict[str, Any]:
    """SavedModel, TFLite (fp32, fp16, full-int8; MediaPipe Tasks metadata inside) and ONNX under
    RUN/export/ (`tfod export`); returns the manifest, `export.json`. `formats` (default: all the
    run's detector family exports) and `quants` take a list or a comma-separated string."""
    from tfod.export.exporter import FORMATS, QUANTS, parse_list
    from tfod.export.exporter import export as run_export
    from tfod.export.report import print_export

    def chosen(value: str | Sequence[str], allowed: tuple[str, ...], option: str) -> list[str]:
        return parse_list(value if isinstance(value, str) else ",".join(value), allowed, option)

    format_list = chosen(formats, FORMATS, "--format") if formats is not None else None
    quant_list = chosen(quants, QUANTS, "--quant") if quants is not None else None
    run_dir = RunDir(Path(run)).require()
    with native_output_to(run_dir.path / "export.log"):
        manifest = run_export(
            run_dir,
            checkpoint,
            format_list,
            quant_list,
            calibration_images,
            on_step=lambda text: console.print(f"Exporting: {escape(text)}"),
            io=io,
            max_cpu_ops=max_cpu_ops,
            metadata=metadata,
        )
    print_export(console, manifest)
    console.print(f"Artefacts in {escape(str(run_dir.path / 'export'))} (manifest: export.json).")
    return manifest


def verify(
    run: PathLike, max_ap_drop: float | None = None, per_class: bool = False
) -> list[Verified]:
    """Score the checkpoint and every exported artefact of `run` on its validation split, each
    through its own runtime (`tfod verify`): size, AP, ΔAP, latency. Raises `TfodError` if an
    artefact lost more than `max_ap_drop` AP. Returns the rows, the checkpoint first."""
    from tfod.console import counter
    from tfod.export.report import print_per_class, print_verification
    from tfod.export.verify import check_ap_drop
    from tfod.export.verify import verify as run_verify

    run_dir = RunDir(Path(run)).require()
    with native_output_to(run_dir.path / "export.log"), counter() as progress:
        rows, images = run_verify(run_dir, on_model=progress)
    print_verification(console, rows, images)
    if per_class:
        print_per_class(console, rows)
    if max_ap_drop is not None:
        check_ap_drop(rows, max_ap_drop)
    return rows


def load(model: PathLike, checkpoint: str = "best") -> DetectionModel:
    """A detector from a run folder (its `checkpoint`), a SavedModel folder, a .tflite or an .onnx
    file: `load(...).detect(rgb_uint8_array)` returns its `Detections` (boxes in the image's
    pixels as ymin, xmin, ymax, xmax; scores; class ids, named by `.labels`)."""
    from tfod.predict.predict import load_model

    return load_model(Path(model), checkpoint)


def predict(
    model: PathLike | DetectionModel,
    inputs: PathLike | Sequence[PathLike],
    out: PathLike = "predictions",
    threshold: float = 0.3,
    checkpoint: str = "best",
) -> Prediction:
    """Detect on images, folders and videos (`tfod predict`): annotated copies and COCO results
    JSON in `out`. `model` is what `load` takes, or a model it returned."""
    from tfod.console import counter
    from tfod.predict.predict import count_frames
    from tfod.predict.predict import predict as run_predict

    if not 0.0 <= threshold <= 1.0:
        raise TfodError(f"threshold must be between 0 and 1, got {threshold}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TfodError("the output must be a folder, and this is a file", out)
    paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    with native_output_to(out / "predict.log"), counter() as progress:
        detector = load(model, checkpoint) if isinstance(model, str | Path) else model
        tick = progress("frames", count_frames(paths))
        result = run_predict(detector, paths, out, threshold, on_frame=tick)
    _report_prediction(detector, result, threshold)
    return result


def _report_prediction(detector: DetectionModel, result: Prediction, threshold: float) -> None:
    if problem := getattr(detector, "delegate_problem", ""):
        console.print(f"[yellow]{escape(problem)}[/yellow]: ran on LiteRT's reference kernels")
    console.print(
        f"{result.images} image(s), {result.videos} video(s) ({result.frames} frames): "
        f"{result.detections} detections at score >= {threshold:g} -> {escape(str(result.out))}"
    )
    for path, reason in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(str(path))}: {escape(reason)}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} input(s) skipped[/yellow]")
    if result.images == 0 and result.frames == 0:
        raise TfodError("nothing was predicted: no input could be read")
