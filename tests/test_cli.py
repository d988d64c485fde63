"""The `tfod` command: subcommands work end to end; user errors are one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import tfod
from tfod.cli import app
from tfod.errors import TfodError

runner = CliRunner()


def _tfod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfod", *args], capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = _tfod("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tfod {tfod.__version__}"


def test_user_error_is_one_clear_line_without_traceback(tmp_path: Path) -> None:
    result = _tfod("data", "convert", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "error:" in result.stderr
        and "nowhere" in result.stderr
        and "does not exist" in result.stderr
    )


def test_demo_then_stats(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["data", "demo", "--out", str(out), "--n", "24", "--seed", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["splits"]["train"]["images"] + summary["splits"]["val"]["images"] == 24
    assert summary["problems"]["counts"] == {}
    assert {c["name"] for c in summary["classes"]} == {"circle", "square", "triangle"}
    assert all(
        summary["splits"]["train"]["per_class"][c] > 0 for c in ("circle", "square", "triangle")
    )

    result = runner.invoke(app, ["data", "stats", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fingerprint"] == summary["fingerprint"]
    for name in ("classes.png", "boxes.png", "samples.png"):
        with Image.open(out / "plots" / name) as image:
            assert image.size[0] > 200 and image.size[1] > 100
            assert len(set(image.convert("L").getdata())) > 10, f"{name} looks blank"


def test_demo_with_masks_then_stats_counts_them(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["data", "demo", "--out", str(out), "--n", "8", "--masks"])
    assert result.exit_code == 0, result.output
    assert "boxes with a mask" in result.output
    summary = json.loads((out / "dataset.json").read_text())
    assert all(s["masks"] == s["boxes"] > 0 for s in summary["splits"].values())
    result = runner.invoke(app, ["data", "stats", str(out)])
    assert result.exit_code == 0 and "boxes with a mask" in result.output, result.output


def test_demo_is_deterministic(tmp_path: Path) -> None:
    fingerprints = []
    for name in ("a", "b"):
        result = runner.invoke(app, ["data", "demo", "--out", str(tmp_path / name), "--n", "8"])
        assert result.exit_code == 0, result.output
        fingerprints.append(
            json.loads((tmp_path / name / "dataset.json").read_text())["fingerprint"]
        )
    assert fingerprints[0] == fingerprints[1]
    result = runner.invoke(
        app, ["data", "demo", "--out", str(tmp_path / "c"), "--n", "8", "--seed", "1"]
    )
    assert (
        json.loads((tmp_path / "c" / "dataset.json").read_text())["fingerprint"] != fingerprints[0]
    )


def test_convert_cli_reports_problems_and_strict_exit_code(tmp_path: Path) -> None:
    from tests.data.sources import write_csv

    src = write_csv(tmp_path / "src")
    (src / "images" / "a.jpg").write_bytes(b"broken")
    result = _tfod("data", "convert", str(src), "--out", str(tmp_path / "out"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "unreadable_image" in result.stderr and "image skipped" in result.stderr
    result = _tfod("data", "convert", str(src), "--out", str(tmp_path / "strict"), "--strict")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--strict" in result.stderr and not (tmp_path / "strict").exists()


def test_stats_on_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    result = _tfod("data", "stats", str(tmp_path))
    assert result.returncode == 1 and "not a tfod dataset folder" in result.stderr


def test_init_then_validate_then_show(tmp_path: Path, demo_data: Path) -> None:
    config = tmp_path / "tfod.yaml"
    result = runner.invoke(
        app,
        [
            "init",
            "--data",
            str(demo_data),
            "--out",
            str(config),
            "--preset",
            "retinanet-mobilenetv2-256-smoke",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["init", "--data", str(demo_data), "--out", str(config)])
    assert isinstance(result.exception, TfodError) and "--force" in str(result.exception)

    result = runner.invoke(
        app, ["config", "validate", str(config), "--steps", "300", "--batch-size", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "All pre-flight checks passed" in result.output and "norm_momentum" in result.output

    timed = tmp_path / "timed.yaml"
    timed.write_text(config.read_text().replace("  steps: 4\n", "  time: 5m\n"), encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(timed)])
    assert result.exit_code == 0, result.output
    assert "Time budget 5m: steps, warmup and evaluations above are provisional" in result.output

    result = runner.invoke(app, ["train", str(timed), "--steps", "3", "--time", "5m"])
    assert isinstance(result.exception, TfodError) and "one or the other" in str(result.exception)
    result = runner.invoke(app, ["train", str(timed), "--time", "soon"])
    assert isinstance(result.exception, TfodError) and "not a duration" in str(result.exception)

    result = runner.invoke(app, ["config", "show", str(config)])
    assert result.exit_code == 0, result.output
    import yaml

    shown = yaml.safe_load(result.stdout)
    assert shown["task"]["model"]["num_classes"] == 4
    assert shown["task"]["annotation_file"].endswith("val_coco.json")


def test_validate_exits_nonzero_on_a_failed_check(tmp_path: Path, demo_data: Path) -> None:
    config = tmp_path / "tfod.yaml"
    config.write_text(
        f"name: x\ndata: {{dir: {demo_data}}}\nmodel: {{preset: retinanet-mobilenetv2-256-smoke}}\ntrain: {{batch_size: 500}}\n"
    )
    result = _tfod("config", "validate", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.batch_size" in result.stderr
    assert "Strategy: one_device on this host (CPU each): 1 replica(s), 500 images per" in " ".join(
        (result.stdout + result.stderr).split()
    )


def test_validate_prints_the_strategy_replicas_and_per_replica_batch(
    tmp_path: Path, demo_data: Path
) -> None:
    config = tmp_path / "tfod.yaml"
    config.write_text(
        f"name: x\ndata: {{dir: {demo_data}}}\nmodel: {{preset: retinanet-mobilenetv2-256-smoke}}\ntrain: {{batch_size: 8}}\n"
    )
    cluster = {"worker": ["h0:2222", "h1:2222"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    result = subprocess.run(
        [sys.executable, "-m", "tfod", "config", "validate", str(config)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CONFIG": tf_config},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = " ".join((result.stdout + result.stderr).split())
    assert (
        "Strategy: multi_worker on 2 workers (CPU each): 2 replica(s), 4 images per replica (global batch 8)"
        in out
    )


@pytest.mark.slow
def test_eval_command_on_a_run(smoke_run: Path) -> None:
    result = runner.invoke(app, ["eval", str(smoke_run), "--checkpoint", "best"])
    assert result.exit_code == 0, result.output
    assert (smoke_run / "eval.log").is_file()


def test_tensorboard_runs_in_this_environment() -> None:
    """Runs are read with TensorBoard (compose's tensorboard service too); its 2.20 release
    imports pkg_resources, gone from setuptools 81+, hence the pin in pyproject.toml."""
    import shutil

    tensorboard = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    assert tensorboard is not None
    result = subprocess.run(
        [tensorboard, "--version_tb"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("2.")


def test_demo_trains_the_run_it_is_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """compose's TFOD_RUN reaches the demo trainer (`tfod demo --run`), as it does the evaluator."""
    from tfod.train import demo

    calls: list[tuple[object, ...]] = []

    def record(data: Path, runs_dir: Path, steps: int | None, inline_eval: bool, name: str) -> None:
        calls.append((steps, inline_eval, name, demo.demo_config(data, steps or 1, name).name))
        raise typer.Exit(0)

    monkeypatch.setattr(demo, "run_demo", record)
    result = runner.invoke(
        app, ["demo", "--data", str(tmp_path), "--run", "other", "--steps", "3", "--no-eval"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [(3, False, "other", "other")]
