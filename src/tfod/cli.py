"""The `tfod` command: each subcommand is a few lines over a library function tests call directly.

TensorFlow and Model Garden are imported inside the commands that need them, so `tfod --help`
answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

import tfod
from tfod.console import console
from tfod.errors import TfodError

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
        print(f"tfod {tfod.__version__}")
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
    from tfod.data.convert import ConvertOptions, convert
    from tfod.data.report import print_summary

    options = ConvertOptions(
        format=format,
        val_fraction=val_fraction,
        seed=seed,
        strict=strict,
        workers=workers,
        classes=tuple(classes.split(",")) if classes is not None else None,
        difficult=difficult,
    )
    summary = convert(src, out, options)
    print_summary(console, summary)
    console.print(f"Wrote [bold]{escape(str(out))}[/bold]")


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")] = Path(
        "data/demo"
    ),
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 160,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same dataset.")] = 0,
) -> None:
    """Generate a synthetic shapes dataset and convert it like any user dataset."""
    from tfod.data.demo import make_demo
    from tfod.data.report import print_summary

    summary = make_demo(out, n=n, seed=seed)
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
    from tfod.data.report import print_summary
    from tfod.data.stats import load_summary, write_plots

    summary = load_summary(directory)
    if as_json:
        print(json.dumps(summary, indent=2))
    print_summary(console, summary)
    written = write_plots(directory, plots or directory / "plots")
    for path in written:
        console.print(f"Plot: {escape(str(path))}")


def main() -> None:
    """Entry point: run the app; a `TfodError` is one red line, not a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app()
    except TfodError as err:
        console.print(f"[bold red]error:[/bold red] {escape(str(err))}")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
