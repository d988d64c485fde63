"""Early stopping: the plateau rule, and a real run that stops cleanly when its metric plateaus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import smoke_config
from tfod.config.schema import EarlyStop
from tfod.runs.rundir import FINISHED, RunDir
from tfod.train.early_stop import plateau_reason
from tfod.train.trainer import train


def _rows(*values: float) -> list[dict[str, object]]:
    return [{"step": 10 * (i + 1), "metrics": {"AP": v}} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("values", "rule", "stops"),
    [
        ((0.1, 0.2, 0.3), EarlyStop(patience=2), False),
        ((0.3, 0.3, 0.3), EarlyStop(patience=2), True),
        ((0.3, 0.29, 0.31), EarlyStop(patience=2), False),
        ((0.3, 0.305, 0.309), EarlyStop(patience=2, min_delta=0.01), True),
        ((0.3, 0.2), EarlyStop(patience=2), False),
        ((), EarlyStop(patience=1), False),
    ],
)
def test_plateau_rule(values: tuple[float, ...], rule: EarlyStop, stops: bool) -> None:
    assert (plateau_reason(_rows(*values), rule) is not None) == stops


def test_reason_names_metric_best_and_step() -> None:
    reason = plateau_reason(_rows(0.5, 0.4, 0.45), EarlyStop(patience=2))
    assert reason == "AP has not improved by more than 0 in 2 evaluations (best 0.500 at step 10)"


@pytest.mark.slow
def test_a_plateauing_run_stops_early_and_cleanly(demo_data: Path, tmp_path: Path) -> None:
    # An untrained smoke model scores AP 0.0 at every evaluation: a plateau from the start.
    config = smoke_config(
        demo_data,
        name="plateau",
        train={"steps": 40, "early_stop": {"metric": "AP", "patience": 2}},
        eval={"every_steps": 2},
    )
    result = train(config, tmp_path / "runs", progress=False)
    run = RunDir(result.run.path)
    state = run.read()
    assert result.status == FINISHED and state["status"] == FINISHED
    assert state["step"] == 6 < 40
    assert (
        state["early_stopped"]["step"] == 6 and "2 evaluations" in state["early_stopped"]["reason"]
    )
    assert 6 in run.checkpoints()
    assert [r["step"] for r in run.metrics()] == [2, 4, 6]
    assert (run.path / "best" / "checkpoint").is_file()
