"""Batch-size search and out-of-memory recovery, against an injected device and for real on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from typer.testing import CliRunner

from tests.conftest import SMOKE, smoke_config
from tfod.cli import app
from tfod.config.schema import dump_config
from tfod.errors import TfodError
from tfod.runs.rundir import RunDir
from tfod.train.batch_size import OK, Choice, search

GB = 2**30


class FakeDevice:
    """A device whose memory use is `fixed + per_image * batch` (times noise), OOM above `oom_at`."""

    def __init__(self, total: float, fixed: float, per_image: float, oom_at: float | None = None,
                 noise: float = 0.0, seed: int = 0, replicas: int = 1) -> None:  # fmt: skip
        self.name, self.replicas = "fake", replicas
        self.total, self.fixed, self.per_image = int(total), fixed, per_image
        self.oom_at = oom_at if oom_at is not None else total
        self.noise, self.rng = noise, np.random.default_rng(seed)
        self.peak, self.steps = 0, []

    def true_use(self, batch: int) -> float:
        return self.fixed + self.per_image * batch

    def total_bytes(self) -> int:
        return self.total

    def reset_peak(self) -> None:
        self.peak = 0

    def peak_bytes(self) -> int:
        return self.peak

    def step(self, batch: int) -> None:
        self.steps.append(batch)
        use = self.true_use(batch)
        if use > self.oom_at:
            raise tf.errors.ResourceExhaustedError(
                None, None, f"OOM when allocating for batch {batch}"
            )
        self.peak = int(use * (1 + self.rng.uniform(-self.noise, self.noise)))


def _search(device: FakeDevice, max_batch: int = 1024, target: float = 0.8) -> Choice:
    return search(device.step, device, max_batch=max_batch, target=target)


def test_picks_the_largest_multiple_of_8_within_the_budget() -> None:
    device = FakeDevice(total=16 * GB, fixed=2 * GB, per_image=0.1 * GB)  # budget 12.8 GB -> 108
    choice = _search(device)
    assert choice.batch == 104
    assert [p.batch for p in choice.probes] == [2, 4, 8, 16, 32, 64, 104]
    assert choice.probes[-1].status == OK
    assert choice.per_image_bytes == pytest.approx(0.1 * GB)


def test_oom_threshold_between_probes_is_never_chosen() -> None:
    # The allocator fails above batch 37 although the budget would allow ~108: probe 64 fails.
    device = FakeDevice(total=16 * GB, fixed=2 * GB, per_image=0.1 * GB, oom_at=5.7 * GB)
    choice = _search(device)
    assert choice.batch == 32
    assert device.true_use(choice.batch) <= device.oom_at
    assert any(p.batch == 64 and p.status != OK for p in choice.probes)


def test_fragmentation_below_the_fit_steps_down_until_a_real_step_works() -> None:
    # Probes up to 64 succeed, the fit says ~108, but the device fails above 90 images.
    device = FakeDevice(total=16 * GB, fixed=2 * GB, per_image=0.1 * GB, oom_at=11.05 * GB)
    choice = _search(device)
    assert choice.batch == 88
    assert [p.status for p in choice.probes[-3:]] == ["out of memory", "out of memory", OK]


@pytest.mark.parametrize("seed", range(20))
def test_noisy_measurements_never_yield_a_failing_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    oom_at = float(rng.uniform(3, 14)) * GB
    device = FakeDevice(total=16 * GB, fixed=1.5 * GB, per_image=float(rng.uniform(0.02, 0.3)) * GB,
                        oom_at=oom_at, noise=0.15, seed=seed)  # fmt: skip
    choice = _search(device)
    assert device.true_use(choice.batch) <= oom_at, "chose a batch that runs out of memory"
    assert choice.probes[-1].batch == choice.batch and choice.probes[-1].status == OK
    assert choice.batch % 8 == 0 or choice.batch < 8


def test_rounds_to_the_replica_count_and_caps_at_the_split() -> None:
    device = FakeDevice(total=64 * GB, fixed=1 * GB, per_image=0.05 * GB, replicas=3)
    choice = _search(device)
    assert choice.batch % 24 == 0
    capped = _search(FakeDevice(total=64 * GB, fixed=1 * GB, per_image=0.01 * GB), max_batch=50)
    assert capped.batch == 48


def test_nothing_fits() -> None:
    with pytest.raises(TfodError, match="even batch 2 does not fit"):
        _search(FakeDevice(total=4 * GB, fixed=3.9 * GB, per_image=0.5 * GB))


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "largest"), [(SMOKE, 8), ("yolov7-tiny-416-smoke", 2)])
def test_batch_size_command_on_cpu(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str, largest: int
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tmp_path / "tfod.yaml"
    config.write_text(dump_config(smoke_config(demo_data, model={"preset": preset})))
    runner = CliRunner()
    result = runner.invoke(app, ["batch-size", str(config), "--max-batch", str(largest)])
    assert result.exit_code == 0, result.output
    cache = json.loads((tmp_path / "cache" / "tfod" / "batch_sizes.json").read_text())
    (entry,) = cache.values()
    assert entry["device"] == "cpu" and entry["batch"] == largest
    probed = [2**k for k in range(1, largest.bit_length())]  # 2, 4, ... largest
    assert [p["batch"] for p in entry["probes"]] == [*probed, largest]
    assert all(p["status"] == OK and p["peak_bytes"] > 0 for p in entry["probes"])
    again = runner.invoke(app, ["batch-size", str(config), "--max-batch", str(largest)])
    assert again.exit_code == 0
    assert len(json.loads((tmp_path / "cache" / "tfod" / "batch_sizes.json").read_text())) == 1


@pytest.mark.slow
def test_auto_batch_size_is_searched_and_recorded(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfod.train import batch_size
    from tfod.train.trainer import train

    def fake_choose(experiment: object, max_batch: int, **_: object) -> Choice:
        return Choice(batch=8, device="fake", total_bytes=GB, budget_bytes=GB // 2,
                      fixed_bytes=0.0, per_image_bytes=1.0, probes=[])  # fmt: skip

    monkeypatch.setattr(batch_size, "choose", fake_choose)
    config = smoke_config(demo_data, name="auto", train={"batch_size": "auto", "steps": 2})
    result = train(config, tmp_path / "runs", progress=False)
    state = RunDir(result.run.path).read()
    assert state["plan"]["batch_size"] == 8 and state["batch_search"]["batch"] == 8


@pytest.mark.slow
def test_out_of_memory_midway_halves_the_batch_and_resumes_from_the_checkpoint(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orbit

    from tfod.train.trainer import train

    real = orbit.Controller._train_n_steps
    device = FakeDevice(
        total=16 * GB, fixed=1 * GB, per_image=1 * GB, oom_at=6 * GB
    )  # batch 8 fails

    def train_n_steps(self: orbit.Controller, num_steps: int) -> object:
        batch = self.trainer.config.task.train_data.global_batch_size
        if int(self.global_step.numpy()) >= 4:  # the memory need shows up after a checkpoint
            device.step(batch)
        return real(self, num_steps)

    monkeypatch.setattr(orbit.Controller, "_train_n_steps", train_n_steps)
    config = smoke_config(
        demo_data, name="oom", train={"batch_size": 8, "steps": 12}, eval={"every_steps": 4}
    )
    result = train(config, tmp_path / "runs", progress=False)
    run = RunDir(result.run.path)
    state = run.read()
    assert result.status == "finished" and state["step"] == 12
    (event,) = state["oom_events"]
    assert (event["batch_from"], event["batch_to"], event["resumed_from"]) == (8, 4, 4)
    assert state["plan"]["batch_size"] == 4
    written = yaml.safe_load((run.path / "experiment.yaml").read_text())
    assert written["task"]["train_data"]["global_batch_size"] == 4
    assert state["plan"]["learning_rate"] == pytest.approx(4 * 0.32 * 4 / 256)  # auto: 4x linear
    assert [r["step"] for r in run.metrics()] == [4, 8, 12]
    assert sorted(run.checkpoints()) == [4, 8, 12]


@pytest.mark.parametrize(("preset", "rate_kept"), [(SMOKE, 0.5), ("yolov7-tiny-416-smoke", 1.0)])
def test_out_of_memory_halving_scales_the_rate_unless_the_loss_is_summed(
    demo_data: Path, tmp_path: Path, preset: str, rate_kept: float
) -> None:
    from tfod.config.experiment import make_plan
    from tfod.data.dataset import load_summary
    from tfod.train.trainer import _recover_from_oom

    config = smoke_config(demo_data, model={"preset": preset}, train={"batch_size": 8})
    plan = make_plan(config, load_summary(demo_data))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.update(step=0)
    halved, experiment = _recover_from_oom(config, plan, run)
    assert halved.batch_size == 4 and experiment.task.train_data.global_batch_size == 4
    assert halved.learning_rate == pytest.approx(rate_kept * plan.learning_rate)
    written = yaml.safe_load((run.path / "experiment.yaml").read_text())
    rate = written["trainer"]["optimizer_config"]["learning_rate"]
    assert rate[rate["type"]]["initial_learning_rate"] == pytest.approx(halved.learning_rate)


@pytest.mark.slow
def test_out_of_memory_below_the_floor_gives_up_clearly(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orbit

    from tfod.train.trainer import train

    def always_oom(self: orbit.Controller, num_steps: int) -> object:
        raise tf.errors.ResourceExhaustedError(None, None, "OOM")

    monkeypatch.setattr(orbit.Controller, "_train_n_steps", always_oom)
    config = smoke_config(demo_data, name="hopeless", train={"batch_size": 4, "steps": 4})
    with pytest.raises(TfodError, match=r"out of memory at batch 2 .* below 2 cannot train"):
        train(config, tmp_path / "runs", progress=False)
    state = RunDir(tmp_path / "runs" / "hopeless").read()
    assert state["status"] == "failed"
    assert [e["batch_to"] for e in state["oom_events"]] == [2, None]
