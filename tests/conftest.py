"""Fixtures shared across the test packages: generated data and one small trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tfod.config.schema import TfodConfig

SMOKE = "retinanet-mobilenetv2-256-smoke"


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
