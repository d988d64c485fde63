"""The `tfod` command: each subcommand is a few lines over a library function tests call directly.

TensorFlow and Model Garden are imported inside the commands that need them, so `tfod --help`
answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tfod import api
from tfod.console import console, native_output_to
from tfod.errors import TfodError
from tfod.runs.rundir import RunDir
from tfod.version import __version__

if TYPE_CHECKING:
    from tfod.train.trainer import TrainResult

EXIT_STOPPED = 75
"""`tfod train`'s exit status after Ctrl-C or SIGTERM: stopped with a checkpoint saved, resumable by
running the same command (75 is sysexits' EX_TEMPFAIL). `train && export` then exports nothing."""

app = typer.Typer(
    help="From a folder of labelled images to a trained, evaluated, quantized object detector.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Convert, generate and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.callback()
def _data() -> None:
    # Data commands use TensorFlow only for TFRecord I/O: its device probing (cuInit errors on a
    # host without a GPU) is noise there.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def _version(value: bool) -> None:
    if value:
        print(f"tfod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """tfod: labelled images in, a tested detector out."""


@data_app.command("convert")
def data_convert(
    src: Annotated[
        Path, typer.Argument(help="Annotated image folder (or a COCO .json / .csv file).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="voc, coco, yolo, csv, or auto (detect).")
    ] = "auto",
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction for validation, split by seed and image content. "
            "Default: the source's own train/val split if it has one, else 0.2."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/val split.")] = 0,
    strict: Annotated[
        bool, typer.Option(help="Treat any problem as an error; write nothing.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Decoding processes (default: one per core).")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated class names in id order; others are dropped."),
    ] = None,
    difficult: Annotated[
        str, typer.Option(help="VOC difficult boxes: ignore (crowd regions), keep, or drop.")
    ] = "ignore",
) -> None:
    """Convert VOC, COCO, YOLO or CSV annotations into checked, sharded TFRecords."""
    names = classes.split(",") if classes is not None else None
    api.convert(src, out, format, val_fraction, seed, strict, workers, names, difficult)
    console.print(f"Wrote [bold]{escape(str(out))}[/bold]")


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")] = Path(
        "data/demo"
    ),
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 160,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same dataset.")] = 0,
    masks: Annotated[
        bool, typer.Option("--masks", help="Each object's visible pixels as its mask (COCO RLE).")
    ] = False,
) -> None:
    """Generate a synthetic shapes dataset and convert it like any user dataset."""
    api.demo_data(out, n=n, seed=seed, masks=masks)
    console.print(f"Wrote [bold]{escape(str(out))}[/bold]")


@data_app.command("import-tfrecord")
def data_import_tfrecord(
    train: Annotated[
        list[str], typer.Option(help="Training records: paths or globs (repeat or comma-separate).")
    ],
    val: Annotated[list[str], typer.Option(help="Validation records: paths or globs.")],
    label_map: Annotated[Path, typer.Option(help="The records' label_map.pbtxt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    copy: Annotated[
        bool,
        typer.Option(
            help="Write new shards (problems skipped and reported, ids renumbered, image bytes "
            "unchanged) instead of linking to the records."
        ),
    ] = False,
) -> None:
    """Import Object Detection API TFRecords as a tfod dataset, checking every Example."""
    from tfod.data.report import print_summary
    from tfod.odapi.records import expand, import_records

    summary = import_records(expand(train, "train"), expand(val, "val"), label_map, out, copy=copy)
    print_summary(console, summary)
    console.print(f"Wrote [bold]{escape(str(out))}[/bold]")


@data_app.command("stats")
def data_stats(
    directory: Annotated[Path, typer.Argument(help="A dataset folder written by tfod.")],
    plots: Annotated[
        Path | None, typer.Option(help="Where to write the PNG plots (default: DIR/plots).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print dataset.json to stdout.")] = False,
) -> None:
    """Print a dataset's summary and plot classes, box sizes and sample images."""
    from tfod.data.dataset import load_summary
    from tfod.data.report import print_summary
    from tfod.data.stats import write_plots

    summary = load_summary(directory)
    if as_json:
        print(json.dumps(summary, indent=2))
    print_summary(console, summary)
    written = write_plots(directory, plots or directory / "plots")
    for path in written:
        console.print(f"Plot: {escape(str(path))}")


config_app = typer.Typer(help="Show and check a tfod.yaml.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigPath = Annotated[Path, typer.Argument(help="A tfod.yaml file.")]
RunsDir = Annotated[
    Path, typer.Option("--runs-dir", envvar="TFOD_RUNS_DIR", help="Where runs live.")
]


@app.command("init")
def init(
    data: Annotated[Path, typer.Option(help="Dataset folder (from `tfod data convert`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")] = Path("tfod.yaml"),
    preset: Annotated[
        str | None,
        typer.Option(
            help="Detector preset (default: the family that scored best for --time on --target, "
            "its preset chosen for the dataset's object sizes)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default: the dataset folder name).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune from this zoo entry (`tfod zoo list`): its preset, a fine-tuning recipe."
        ),
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(
            help="Training budget, e.g. 10m: written as train.time, and what the family is chosen for."
        ),
    ] = None,
    target: Annotated[
        str, typer.Option(help="Where the model runs: phone (needs TFLite) or server.")
    ] = "phone",
) -> None:
    """Write a commented tfod.yaml for a dataset."""
    api.init(data, out, preset, name, force, pretrained, time, target)
    console.print(
        f"Wrote [bold]{escape(str(out))}[/bold]; check it with `tfod config validate {escape(str(out))}`"
    )


@config_app.command("show")
def config_show(config: ConfigPath) -> None:
    """Print the fully resolved Model Garden experiment config (YAML)."""
    import yaml

    from tfod.config.experiment import build_experiment, make_plan
    from tfod.config.schema import load_config
    from tfod.data.dataset import load_summary

    cfg = load_config(config)
    experiment = build_experiment(cfg, make_plan(cfg, load_summary(cfg.data.dir)))
    print(yaml.safe_dump(experiment.as_dict(), sort_keys=False), end="")


@config_app.command("validate")
def config_validate(
    config: ConfigPath,
    steps: Annotated[int | None, typer.Option(help="As `tfod train --steps`.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="As `tfod train --batch-size`.")] = None,
) -> None:
    """Run the pre-flight checks and show the resolved plan."""
    from rich.table import Table

    from tfod.config.experiment import build_experiment, make_plan
    from tfod.config.schema import load_config
    from tfod.data.dataset import load_summary
    from tfod.train.cluster import read_tf_config, resolve
    from tfod.train.preflight import raise_on_errors, run_checks
    from tfod.train.trainer import gpu_count

    cfg = load_config(config)
    summary = load_summary(cfg.data.dir)
    plan = make_plan(cfg, summary, batch_size=batch_size, steps=steps)
    placement = resolve(cfg.train.strategy, gpu_count(), read_tf_config())
    findings = run_checks(cfg, plan, summary, build_experiment(cfg, plan), placement)
    table = Table(title=f"Plan for {cfg.name}")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for key, value in plan.as_dict().items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    if plan.time_budget is not None:
        console.print(
            f"Time budget {cfg.train.time}: steps, warmup and evaluations above are provisional "
            "(the run fits them to the budget after measuring its first steps; batch-norm momentum stays)"
        )
    console.print(f"Strategy: {placement.describe(plan.batch_size)}")
    raise_on_errors(findings, console)
    console.print("[green]All pre-flight checks passed.[/green]")


InlineEval = Annotated[
    bool,
    typer.Option(
        "--eval/--no-eval", help="Evaluate beside training (off: a `tfod eval --watch` does it)."
    ),
]


def _exit_if_stopped(result: TrainResult) -> None:
    """Exit 75 if training was stopped (resumable)."""
    if result.status == "stopped":
        raise typer.Exit(EXIT_STOPPED)


@app.command("train")
def train(
    config: ConfigPath,
    run: Annotated[
        str | None, typer.Option(help="Run name (default: `name:` of the config).")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    steps: Annotated[
        int | None, typer.Option(help="Training steps (overrides the config).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch (overrides the config).")
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(
            help="A wall-clock budget instead of steps, e.g. 10m, 90s, 1.5h: steps and schedule "
            "are fitted to end on time (overrides the config's steps and time)."
        ),
    ] = None,
    eval: InlineEval = True,
) -> None:
    """Train (or resume) a run on Model Garden's trainer; Ctrl-C saves and stops cleanly."""
    _exit_if_stopped(api.train(config, run, runs_dir, steps, batch_size, time, eval))


@app.command("qat")
def qat(
    parent: Annotated[Path, typer.Argument(help="The float run folder (runs/NAME).")],
    run: Annotated[
        str | None, typer.Option(help="The QAT run's name (default: PARENT-qat, beside it).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="QAT steps (default: a tenth of the parent's).")
    ] = None,
    checkpoint: Annotated[
        str, typer.Option(help="The parent's checkpoint: best, latest or a step number.")
    ] = "best",
    eval: InlineEval = True,
) -> None:
    """Quantization-aware training: a new run from PARENT's float checkpoint, fake-quantized to
    int8 (Model Garden's QAT); `tfod export` then builds its int8 TFLite. Run it again to resume."""
    if steps is not None and steps < 1:
        raise TfodError(f"--steps must be a whole number of at least 1, got {steps}")
    _exit_if_stopped(api.qat(parent, run, steps, checkpoint, eval))


@app.command("batch-size")
def batch_size(
    config: ConfigPath,
    target: Annotated[
        float, typer.Option(help="Fraction of device memory the batch may use.")
    ] = 0.8,
    max_batch: Annotated[
        int | None, typer.Option(help="Largest batch to consider (default: the training split).")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Measure again even if a result is cached.")] = False,
    memory_gb: Annotated[
        float | None, typer.Option(help="Device memory to plan for (default: measured).")
    ] = None,
) -> None:
    """Find the largest batch that trains on this device: real steps, measured, fitted, confirmed."""
    from tfod.config.experiment import build_experiment, make_plan
    from tfod.config.schema import load_config
    from tfod.data.dataset import load_summary
    from tfod.train.batch_size import cache_file, choose
    from tfod.train.report import print_batch_choice

    cfg = load_config(config)
    plan = make_plan(cfg, load_summary(cfg.data.dir))
    experiment = build_experiment(cfg, plan)
    console.print("Measuring real training steps at growing batch sizes...")
    with native_output_to(cache_file().parent / "batch_size.log"):
        choice = choose(experiment, max_batch or plan.train_images, target, fresh, memory_gb)
    print_batch_choice(console, choice)


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/NAME).")],
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step number.")] = "latest",
    watch: Annotated[
        bool, typer.Option(help="Evaluate every new checkpoint until training finishes.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="--watch: give up after this many idle seconds.")
    ] = 3600,
    poll: Annotated[
        float, typer.Option(help="--watch: seconds between looks for checkpoints.")
    ] = 10,
) -> None:
    """COCO metrics (AP, AP50, AP75, APs/m/l, AR, per class) of a run's checkpoint(s)."""
    from tfod.evaluate.evaluator import RunEvaluator
    from tfod.evaluate.report import print_metrics

    if not watch:
        api.evaluate(run, checkpoint)
        return
    run_dir = RunDir(run)
    _wait_for_run(run_dir, timeout, poll)
    run_dir.require()
    with native_output_to(run / "eval.log"):
        evaluator = RunEvaluator(run_dir)
        console.print(
            f"Watching {escape(str(run))} for checkpoints (idle timeout {timeout:g} s)..."
        )
        count = evaluator.watch(timeout, poll, on_row=lambda row: print_metrics(console, row))
        state = run_dir.read()
        if count:
            console.print(f"Evaluated {count} checkpoint(s); run status: {state.get('status')}.")
        else:  # e.g. the trainer failed, and this is an earlier run of the same name
            console.print(
                f"[yellow]No new checkpoint to evaluate[/yellow]: run {run_dir.name!r} is "
                f"{state.get('status')} at step {state.get('step')} (updated {state.get('updated')}) "
                "and each of its checkpoints was evaluated before. If a trainer was to write it "
                "now, look at the trainer's output."
            )


def _wait_for_run(run: RunDir, timeout: float, poll: float) -> None:
    """Wait until a trainer has started `run` (an evaluator may start first, as in compose)."""
    import time

    from tfod.runs.rundir import EXPERIMENT_YAML

    def started() -> bool:  # the trainer writes both files, one after the other
        return run.exists() and (run.path / EXPERIMENT_YAML).is_file()

    deadline = time.monotonic() + timeout
    if not started():
        console.print(f"Waiting for a trainer to start {escape(str(run.path))}...")
    while not started():
        if time.monotonic() > deadline:
            raise TfodError(f"no run appeared within {timeout:g} s", run.path)
        time.sleep(poll)


@app.command("demo")
def demo(
    data: Annotated[Path, typer.Option(help="Demo dataset folder (made if missing).")] = Path(
        "data/demo"
    ),
    runs_dir: RunsDir = Path("runs"),
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the demo's).")] = None,
    eval: Annotated[
        bool,
        typer.Option(help="Evaluate while training (--no-eval: leave it to `tfod eval --watch`)."),
    ] = True,
    run: Annotated[
        str, typer.Option(help="The run's name (its folder under --runs-dir).")
    ] = "demo",
) -> None:
    """The whole job on built-in data: make the demo dataset, train a detector, evaluate it."""
    from tfod.evaluate.report import print_metrics
    from tfod.train.demo import run_demo

    result = run_demo(data, runs_dir, steps, inline_eval=eval, name=run)
    if result.last_eval is not None:
        print_metrics(console, result.last_eval, f"Demo run {result.run.path}: COCO metrics")
    _exit_if_stopped(result)


MaxApDrop = Annotated[
    float | None,
    typer.Option(
        help="Fail (exit 1) if an artefact's AP is below the float checkpoint's by more than this."
    ),
]
PerClass = Annotated[
    bool,
    typer.Option(
        "--per-class",
        help="Also print each class's AP and each artefact's change of it (always in verify.json).",
    ),
]


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/NAME).")],
    checkpoint: Annotated[
        str, typer.Option(help="best (latest before any evaluation), latest or a step number.")
    ] = "best",
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Comma-separated: saved_model, tflite, onnx (default: every one the run's "
            "detector family exports; Faster R-CNN: saved_model, onnx).",
        ),
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option(
            "--quant",
            help="TFLite variants, comma-separated: fp32, fp16, int8 (default: all; a QAT run: int8).",
        ),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(help="Training images that calibrate the int8 model.")
    ] = 200,
    io: Annotated[
        str,
        typer.Option(
            "--io",
            help="The int8 model's input: float, or int8/uint8 for full-integer input "
            "(outputs stay float).",
        ),
    ] = "float",
    verify: Annotated[
        bool, typer.Option("--verify", help="Then score every artefact (see `tfod verify`).")
    ] = False,
    max_ap_drop: MaxApDrop = None,
    per_class: PerClass = False,
    max_cpu_ops: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Fail (artefacts kept) if the Edge TPU model leaves more ops to the CPU "
            "(default: the detection post-processing op alone).",
        ),
    ] = None,
    metadata: Annotated[
        bool,
        typer.Option(
            help="Write MediaPipe Tasks / LiteRT metadata (labels, input, output roles) into each "
            "TFLite model, so apps load it as it is (MediaPipe runs in its own environment, "
            "installed on first use).",
        ),
    ] = True,
) -> None:
    """SavedModel, TFLite (fp32, fp16, full-int8) and ONNX, NMS inside, under RUN/export/, with a
    manifest.

    A QAT run (`tfod qat`) exports its int8 TFLite and its float parent's post-training int8."""
    api.export(run, checkpoint, format, quant, calibration_images, io, max_cpu_ops, metadata)
    if verify:
        api.verify(run, max_ap_drop, per_class)


@app.command("verify")
def verify(
    run: Annotated[Path, typer.Argument(help="A run folder with an export.")],
    max_ap_drop: MaxApDrop = None,
    per_class: PerClass = False,
) -> None:
    """Score every exported artefact on the validation split: size, AP, ΔAP, latency, speed-up."""
    api.verify(run, max_ap_drop, per_class)


@app.command("predict")
def predict(
    model: Annotated[
        Path, typer.Argument(help="A run folder, a SavedModel folder, a .tflite or an .onnx file.")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders and videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")] = Path(
        "predictions"
    ),
    threshold: Annotated[float, typer.Option(help="Lowest score kept.")] = 0.3,
    checkpoint: Annotated[
        str, typer.Option(help="For a run: best, latest or a step number.")
    ] = "best",
) -> None:
    """Detect on images and videos: annotated copies plus COCO results JSON."""
    if not 0.0 <= threshold <= 1.0:
        raise TfodError(f"--threshold must be between 0 and 1, got {threshold}")
    if out.exists() and not out.is_dir():
        raise TfodError("--out must be a folder, and this is a file", out)
    api.predict(model, inputs, out, threshold, checkpoint)


import_app = typer.Typer(
    help="Bring an Object Detection API setup along (pipeline.config, TFRecords).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@import_app.command("pipeline")
def import_pipeline(
    pipeline: Annotated[Path, typer.Argument(help="The Object Detection API pipeline.config.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The tfod.yaml to write.")] = Path(
        "tfod.yaml"
    ),
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset folder for the imported records (default: data/NAME)."),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Use this preset instead of the nearest one.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default: the config's file name).")
    ] = None,
    copy: Annotated[
        bool, typer.Option(help="Copy the records (see `tfod data import-tfrecord --copy`).")
    ] = False,
    paths_from: Annotated[
        Path | None,
        typer.Option(help="Folder the file's relative paths are read from (default: its own)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing tfod.yaml.")] = False,
) -> None:
    """Map a pipeline.config onto a tfod.yaml, field by field, and import its TFRecords."""
    from tfod.odapi.pipeline import import_pipeline as run_import
    from tfod.odapi.report import print_import

    result = run_import(
        pipeline, out, data_dir=data, preset=preset, name=name, copy=copy,
        paths_from=paths_from, force=force,
    )  # fmt: skip
    print_import(console, result)
    console.print(f"Wrote [bold]{escape(str(out))}[/bold]")


zoo_app = typer.Typer(help="Published COCO detectors to start from.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list() -> None:
    """Every entry: preset, input size, COCO AP, what it restores, URL, and whether it is cached."""
    from rich.table import Table

    from tfod.config.presets import get_preset
    from tfod.zoo.cache import cache_dir, read_manifest
    from tfod.zoo.catalog import ZOO

    table = Table(title=f"tfod zoo (cache: {escape(str(cache_dir()))})")
    for column in ("name", "preset", "input", "COCO AP", "restores", "source", "cached"):
        table.add_column(
            column,
            justify="right" if column in ("input", "COCO AP") else "left",
            overflow="fold",  # a URL is wrapped, never cut
        )
    damaged = []
    for entry in ZOO.values():
        try:
            manifest = read_manifest(f"zoo:{entry.name}")
        except TfodError as err:
            where = "[red]damaged[/red]"
            damaged.append(err)
        else:
            where = f"[green]yes[/green] {manifest['bytes'] / 1e6:.0f} MB" if manifest else "no"
        table.add_row(
            entry.name, entry.preset, str(get_preset(entry.preset).input_size),
            f"{entry.coco_ap:g}" if entry.restores == "detector" else f"({entry.coco_ap:g} top-1)",
            entry.restores, escape(entry.url), where,
        )  # fmt: skip
    console.print(table)
    for problem in damaged:
        console.print(f"[red]{escape(str(problem))}[/red]", soft_wrap=True)
    console.print("Start from one: `tfod init --data DIR --pretrained NAME`.")


@zoo_app.command("get")
def zoo_get(
    name: Annotated[str, typer.Argument(help="A zoo entry (`tfod zoo list`) or a URL.")],
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again even if cached (replaces a damaged entry).")
    ] = False,
) -> None:
    """Download, check and cache an entry (resumes an interrupted download; cached: no network)."""
    from tfod.zoo.cache import fetch, is_remote

    cached = fetch(name if is_remote(name) else f"zoo:{name}", force=force)
    manifest = cached.manifest
    console.print(
        f"{escape(cached.reference)}: {escape(str(cached.prefix))} "
        f"({manifest['bytes'] / 1e6:.1f} MB, sha256 {manifest['sha256']}, from {escape(manifest['url'])})"
    )
    fetched_from = [url for url in manifest.get("fetched_from", []) if url != manifest["url"]]
    if fetched_from:
        console.print(f"Fetched from {escape(', '.join(fetched_from))}")


@zoo_app.command("add")
def zoo_add(
    name: Annotated[str, typer.Argument(help="A zoo entry (`tfod zoo list`).")],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="A path or URL holding the entry's file(s) as published: the .tar.gz or .h5, or "
            "the checkpoint prefix (PREFIX.index and PREFIX.data-* beside it).",
            show_default=False,
        ),
    ],
) -> None:
    """Cache an entry from a copy you have (a colleague's, a mirror of your own) when its publisher
    cannot serve it: checked as a download is (the sha256 pinned or recorded, a checkpoint that
    reads back whole), then restored into the entry's preset. `tfod zoo pack` can serve it on."""
    from tfod.train.finetune import check_fits
    from tfod.train.report import print_restore
    from tfod.zoo.cache import fetch
    from tfod.zoo.catalog import get_entry

    entry = get_entry(name)
    reports = []

    def fits(prefix: Path) -> None:
        try:
            reports.append(check_fits(str(prefix), entry.preset, entry.restores))
        except TfodError as err:
            raise TfodError(f"{err.message}; nothing was cached", source) from None

    added = fetch(f"zoo:{name}", source=source, check=fits)
    heading = f"Restored into {entry.preset} (with COCO's classes), as a fine-tune would:"
    print_restore(console, {"checkpoint": str(added.prefix), "report": reports[0]}, heading)
    console.print(
        f"Cached zoo:{escape(name)} from {escape(source)} "
        f"({added.manifest['bytes'] / 1e6:.1f} MB, sha256 {added.manifest['sha256']}): "
        f"it fits {entry.preset}; `tfod init --pretrained {name}` starts from it."
    )


@zoo_app.command("pack")
def zoo_pack(
    names: Annotated[list[str], typer.Argument(help="Cached zoo entries (`tfod zoo list`).")],
    out: Annotated[
        Path, typer.Option("--out", help="A folder (added to), or FILE.tar.", show_default=False)
    ],
) -> None:
    """Write a mirror of cached entries for other machines: each file byte for byte under its
    publisher's path, with SHA256SUMS. Serve the folder (a mount, `python -m http.server`, an
    object store) and set TFOD_ZOO_MIRROR to it there."""
    from tfod.zoo.mirror import pack

    index = pack(names, out)
    files = [f for entry in index["entries"].values() for f in entry["files"]]
    tar = out.suffix == ".tar"
    size = out.stat().st_size if tar else sum((out / f).stat().st_size for f in files)
    console.print(
        f"Wrote {len(index['entries'])} entr{'y' if len(index['entries']) == 1 else 'ies'} "
        f"({len(files)} file(s), {size / 1e6:.1f} MB) to [bold]{escape(str(out))}[/bold]"
    )
    where = "a folder holding its contents" if tar else "it"
    console.print(
        f"On each machine: TFOD_ZOO_MIRROR=URL of {where} (or its path, mounted); "
        "`tfod zoo check` shows whether it answers."
    )


@zoo_app.command("check")
def zoo_check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Entries to check (default: all).")
    ] = None,
) -> None:
    """Ask every source of every entry for one byte (nothing is downloaded): which answer, and
    whether the size is the cached file's. Exit 1 if some entry has no source that answers."""
    from rich.table import Table

    from tfod.zoo.cache import read_manifest
    from tfod.zoo.mirror import check

    probes = check(names)
    table = Table(title="zoo sources")
    for column in ("entry", "source", "answer", "size", "= cached"):
        table.add_column(column, justify="right" if column == "size" else "left", overflow="fold")
    for probe in probes:
        try:
            manifest = read_manifest(f"zoo:{probe.entry}")
        except TfodError:
            manifest = None
        same = "-" if manifest is None or probe.size is None else (
            "[green]yes[/green]" if probe.size == manifest["bytes"] else "[red]no[/red]"
        )  # fmt: skip
        answer = "[green]ok[/green]" if probe.reachable else f"[red]{escape(probe.status)}[/red]"
        size = "" if probe.size is None else f"{probe.size / 1e6:.1f} MB"
        table.add_row(probe.entry, escape(probe.source), answer, size, same)
    console.print(table)
    dead = sorted({p.entry for p in probes} - {p.entry for p in probes if p.reachable})
    if dead:
        raise TfodError(
            f"no source answers for {', '.join(dead)}: a fetch of it would fail here (a mirror: "
            "TFOD_ZOO_MIRROR; `tfod zoo pack` writes one on a machine that has it cached)"
        )


runs_app = typer.Typer(help="List, inspect and compare runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(
    runs_dir: Annotated[
        Path, typer.Argument(envvar="TFOD_RUNS_DIR", help="Folder of runs.")
    ] = Path("runs"),
    sort: Annotated[
        str, typer.Option(help="Column to sort by, e.g. best_ap, created, name.")
    ] = "created",
    desc: Annotated[bool, typer.Option("--desc", help="Largest first.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summaries as JSON to stdout.")
    ] = False,
) -> None:
    """One table of every run: status, preset, batch, steps, best AP and when, loss, time."""
    from tfod.runs.registry import list_runs, sort_runs
    from tfod.runs.report import print_run_list

    runs = sort_runs(list_runs(runs_dir), sort, desc)
    if as_json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return
    print_run_list(console, runs)


@runs_app.command("show")
def runs_show(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    plots: Annotated[bool, typer.Option(help="(Re)draw the run's plots under RUN/plots.")] = True,
) -> None:
    """One run in detail: summary, every evaluation, and its plots."""
    from tfod.runs.report import print_run

    run_dir = RunDir(run).require()
    print_run(console, run_dir)
    if plots:
        from tfod.runs.plots import write_run_plots

        with native_output_to(run / "plots.log"):
            written = write_run_plots(run_dir)
        for path in written:
            console.print(f"Plot: {escape(str(path))}")


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders.")],
    plot: Annotated[
        Path | None, typer.Option(help="Where to draw their curves (default: RUNS/compare.png).")
    ] = None,
) -> None:
    """What differs between runs (resolved settings) and how their metrics moved, plus one plot."""
    from tfod.runs.plots import compare_plot
    from tfod.runs.report import print_comparison

    if len(runs) < 2:
        raise TfodError("give at least two runs to compare")
    run_dirs = [RunDir(r).require() for r in runs]
    print_comparison(console, run_dirs)
    out = plot or runs[0].parent / "compare.png"
    with native_output_to(run_dirs[0].path / "plots.log"):
        compare_plot(run_dirs, out)
    console.print(f"Plot: {escape(str(out))}")


def main() -> None:
    """Entry point: run the app; a `TfodError` is one red line, not a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app()
    except TfodError as err:
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
        sys.exit(1)
    except OSError as err:  # a full disk, a read-only folder, a file where a folder should be
        where = f"{err.filename}: " if err.filename else ""
        message = escape(where + (err.strerror or str(err)))
        console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)
        sys.exit(1)
    except SystemExit as exit:
        # Typer turns Ctrl-C into a silent exit 130: say so, and how to go on where a command
        # left a message on its KeyboardInterrupt.
        interrupt = _interrupt_behind(exit)
        if interrupt is not None:
            said = f": {escape(str(interrupt))}" if str(interrupt) else ""
            console.print(f"[yellow]interrupted[/yellow]{said}", soft_wrap=True)
        raise


def _interrupt_behind(err: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that `err` was raised while handling, if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
