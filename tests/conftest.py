"""Fixtures shared across the test packages: generated data and one small trained run."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

# pytest-xdist's workers inherit COLUMNS=80, and tfod's console honours COLUMNS: messages naming a
# long temporary path would wrap mid-word and miss the tests' assertions. Lay them out wide, as
# tfod does wherever stderr is not a terminal, before anything imports tfod.console.
os.environ["COLUMNS"] = "200"

# A shell without job control starts a background command (`nox -s tests &`) with Ctrl-C
# ignored, and every process started from the tests would inherit that: the tests that press
# Ctrl-C on a tfod command need it delivered. (A Python handler here becomes the default in them.)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

from tfod.config.schema import TfodConfig

SMOKE = "retinanet-mobilenetv2-256-smoke"
# The longest test files, longest first (`nox -s tests` prints the slowest tests). pytest-xdist's
# --dist loadfile hands files to the workers in collection order: started first, they do not leave
# one worker on a long file at the end while the other idles.
LONGEST_FIRST = [
    "train/test_qat.py", "robustness/test_faults.py", "zoo/test_zoo.py", "train/test_multiworker.py",
    "predict/test_predict.py", "train/test_families.py", "evaluate/test_evaluator.py", "test_api.py",
    "zoo/test_keras_weights.py", "train/test_ema.py", "test_cli.py", "train/test_batch_size.py",
    "train/test_budget.py", "export/test_verify.py",
]  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(Path(__file__).parent).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


def smoke_config(data: Path, name: str = "smoke", **sections: Any) -> TfodConfig:
    """A tfod.yaml for the smoke preset; `sections` replace train/eval/model/overrides entries."""
    raw: dict[str, Any] = {
        "name": name,
        "data": {"dir": str(data)},
        "model": {"preset": SMOKE},
        "train": {"steps": 4, "batch_size": 4},
        "eval": {"every_steps": 2, "batch_size": 4},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return TfodConfig.model_validate(raw)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image demo dataset (3 classes)."""
    from tfod.data.demo import make_demo

    out = tmp_path_factory.mktemp("demo") / "data"
    make_demo(out, n=24, progress=False)
    return out


@pytest.fixture(scope="session")
def lines_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 demo pictures whose boxes are squashed into thin horizontal lines (3 px high, 36-104 px
    wide): no anchor box of YOLOv7-tiny's recipe matches them within 4x."""
    import json

    import numpy as np

    from tfod.data.convert import ConvertOptions, convert
    from tfod.data.demo import write_scenes

    root = tmp_path_factory.mktemp("lines")
    write_scenes(root / "src", 12, np.random.default_rng(0))
    coco = json.loads((root / "src" / "annotations.json").read_text())
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        annotation["bbox"] = [x, y + h / 2, w, 3.0]
    (root / "src" / "annotations.json").write_text(json.dumps(coco))
    convert(root / "src", root / "data", ConvertOptions(seed=0, progress=False))
    return root / "data"


@pytest.fixture(scope="session")
def smoke_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run trained 4 steps with inline evaluation at steps 2 and 4.

    Its detector keeps every candidate box (score threshold 0): an untrained model's scores are
    all below the default 0.05, and the evaluation tests need detections to compare.
    """
    from tfod.train.trainer import train

    runs = tmp_path_factory.mktemp("runs")
    keep_all = {"task": {"model": {"detection_generator": {"pre_nms_score_threshold": 0.0}}}}
    result = train(smoke_config(demo_data, overrides=keep_all), runs, progress=False)
    assert result.status == "finished"
    return result.run.path


def _trained(folder: Path) -> Path:
    """A small detector that has learnt something, trained in `folder`: 96 px, 200 steps on 48
    demo images. Export verification needs a reference AP above zero (about 0.14 here) to measure
    drops from."""
    from tfod.data.demo import make_demo
    from tfod.train.trainer import train

    data = folder / "demo48" / "data"
    make_demo(data, n=48, progress=False)
    config = smoke_config(
        data,
        name="trained",
        model={"preset": "retinanet-mobilenetv2-320-smoke"},
        train={"steps": 200, "batch_size": 8, "learning_rate": 0.04},
        eval={"every_steps": 200, "batch_size": 8},
    )
    result = train(config, folder / "runs", progress=False)
    assert result.status == "finished"
    assert result.last_eval is not None and result.last_eval["metrics"]["AP"] > 0.05
    return result.run.path


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A small trained detector (`_trained`) exported to every format (int8 calibrated on 16
    images). Test files on both pytest-xdist workers read it: the first worker to ask makes it,
    the other waits for it (see `_once`)."""
    from tfod.export.exporter import export
    from tfod.runs.rundir import RunDir

    def make(folder: Path) -> Path:
        run = _trained(folder)
        export(RunDir(run), calibration_images=16)
        return run

    return _once(tmp_path_factory, worker_id, "exported_run", make)


def _once(
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
    name: str,
    make: Callable[[Path], Path],
) -> Path:
    """`make(folder)`'s result, made once per test session whatever the number of workers: the
    workers of one session share their base folder's parent, and a lock there lets one make it
    while the others wait. (Without workers that parent is shared by every session: mktemp.)"""
    import fcntl

    if worker_id == "master":
        return make(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent
    made = shared / f"{name}.made"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            made.write_text(str(make(shared / name)))
    return Path(made.read_text())
