"""Run listing and comparison, on finished, running, crashed and old-format runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tfod.cli import app
from tfod.runs.registry import CRASHED, list_runs, setting_differences, sort_runs, summarize
from tfod.runs.report import comparison_sentences
from tfod.runs.rundir import RunDir

runner = CliRunner()


def _metrics(step: int, ap: float, ap50: float) -> dict[str, Any]:
    return {
        "step": step,
        "checkpoint": f"ckpt-{step}",
        "metrics": {"AP": ap, "AP50": ap50, "AP75": ap / 2},
    }


def make_run(
    runs: Path, name: str, batch: int = 24, rows: list[dict[str, Any]] | None = None, **state: Any
) -> RunDir:
    """A run folder as tfod writes it, without training (fields can be left out, like old runs)."""
    path = runs / name
    path.mkdir(parents=True)
    run = RunDir(path)
    if state.get("status") is not None:
        plan = {
            "preset": "retinanet-mobilenetv2-256",
            "batch_size": batch,
            "steps": 1000,
            "learning_rate": 0.01 * batch / 8,
        }
        run.update(plan=plan, created="2026-11-20T10:00:00+00:00", **state)
        experiment = {
            "task": {
                "model": {"input_size": [256, 256, 3]},
                "train_data": {"global_batch_size": batch},
            }
        }
        (path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    for row in rows or []:
        run.append_metrics(row)
    return run


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    here = socket.gethostname()
    sessions = [{"started": "2026-11-20T10:00:00+00:00", "ended": "2026-11-20T10:30:00+00:00"}]
    make_run(runs, "b24", 24, [_metrics(100, 0.30, 0.50), _metrics(200, 0.37, 0.60)],
             status="finished", step=1000, loss=0.51, sessions=sessions)  # fmt: skip
    make_run(runs, "b48", 48, [_metrics(100, 0.32, 0.55)],
             status="finished", step=1000, loss=0.62, sessions=sessions)  # fmt: skip
    make_run(runs, "crashed", 8, [_metrics(100, 0.10, 0.20)],
             status="running", step=150, process={"host": here, "pid": _dead_pid()})  # fmt: skip
    make_run(
        runs, "live", 8, [], status="running", step=20, process={"host": here, "pid": os.getpid()}
    )
    make_run(runs, "old", rows=[_metrics(50, 0.05, 0.1)])  # only metrics.jsonl: an old run
    (runs / "not-a-run").mkdir()
    return runs


def test_list_shows_every_run_with_blanks_not_crashes(runs: Path) -> None:
    listed = {r.name: r for r in list_runs(runs)}
    assert set(listed) == {"b24", "b48", "crashed", "live", "old"}
    b24 = listed["b24"]
    assert (b24.status, b24.preset, b24.input_size, b24.batch) == (
        "finished",
        "retinanet-mobilenetv2-256",
        256,
        24,
    )
    assert (b24.steps_done, b24.steps_total, b24.best_ap, b24.best_ap50, b24.best_step) == (
        1000,
        1000,
        0.37,
        0.60,
        200,
    )
    assert b24.final_loss == 0.51 and b24.duration_s == 1800
    assert listed["crashed"].status == CRASHED
    assert listed["live"].status == "running"
    old = listed["old"]
    assert (old.status, old.preset, old.batch, old.best_ap, old.steps_done) == (
        None,
        None,
        None,
        0.05,
        50,
    )


def test_sort_puts_missing_values_last(runs: Path) -> None:
    ordered = [r.name for r in sort_runs(list_runs(runs), "best_ap", descending=True)]
    assert ordered == ["b24", "b48", "crashed", "old", "live"]


def test_compare_names_the_differences_and_the_metric_moves(runs: Path) -> None:
    pair = [RunDir(runs / "b24"), RunDir(runs / "b48")]
    differences = setting_differences(pair)
    assert differences["plan.batch_size"] == [24, 48]
    assert differences["task.train_data.global_batch_size"] == [24, 48]
    assert "task.model.input_size" not in differences
    (line,) = comparison_sentences(pair)
    assert (
        line
        == "b24 -> b48: batch_size 24 -> 48, learning_rate 0.0300 -> 0.0600: AP 0.370 -> 0.320, AP50 0.600 -> 0.550"
    )


def test_cli_list_json_and_compare_plot(runs: Path) -> None:
    result = runner.invoke(app, ["runs", "list", str(runs), "--json", "--sort", "name"])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.stdout)] == [
        "b24",
        "b48",
        "crashed",
        "live",
        "old",
    ]
    out = runs / "cmp.png"
    result = runner.invoke(
        app, ["runs", "compare", str(runs / "b24"), str(runs / "b48"), "--plot", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


def test_summaries_survive_a_damaged_metrics_line(runs: Path) -> None:
    with (runs / "b48" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 300, "metr')  # a line cut short by a crash elsewhere
    assert summarize(RunDir(runs / "b48")).best_ap == 0.32
