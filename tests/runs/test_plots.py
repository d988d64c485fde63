"""Plots of a real (smoke) run: curves, per-class AP, precision-recall, predictions, TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tfod.runs.plots import compare_plot, loss_history, write_run_plots
from tfod.runs.rundir import RunDir

pytestmark = pytest.mark.slow


def _looks_drawn(path: Path) -> None:
    with Image.open(path) as image:
        assert image.size[0] > 300 and image.size[1] > 200
        assert len(set(image.convert("L").getdata())) > 20, f"{path.name} looks blank"


def test_run_plots(smoke_run: Path) -> None:
    run = RunDir(smoke_run)
    assert [step for step, _ in loss_history(run)] == [2, 4]  # one summary per loop of 2 steps
    written = write_run_plots(run)
    assert [p.name for p in written] == [
        "curves.png",
        "per_class_ap.png",
        "pr_curves.png",
        "predictions.png",
    ]
    for path in written:
        _looks_drawn(path)
    assert list((smoke_run / "plots").glob("events.out.tfevents.*")), "plots as TensorBoard images"


def test_training_draws_the_plots_when_it_ends(smoke_run: Path) -> None:
    assert (smoke_run / "plots" / "curves.png").is_file()


def test_compare_plot_of_two_runs(smoke_run: Path, tmp_path: Path) -> None:
    out = compare_plot([RunDir(smoke_run), RunDir(smoke_run)], tmp_path / "compare.png")
    _looks_drawn(out)
