"""Two CPU workers on localhost (MultiWorkerMirroredStrategy): they train like one, one writes.

Each test starts real `tfod train` processes with TF_CONFIG, as the compose overlay and the
Kubernetes JobSet do. The worker runs in a mount namespace where the runs folder is read-only
(`unshare`, as root): any write it made there would fail it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMOKE, smoke_config
from tests.helpers import wait_for
from tfod.cli import EXIT_STOPPED
from tfod.config.presets import SMOKE_SUFFIX
from tfod.config.schema import TfodConfig, dump_config
from tfod.runs.plots import loss_history
from tfod.runs.rundir import RunDir
from tfod.train.cluster import local_tf_configs

LOSS_TOLERANCE = 0.10  # relative, per logged step: the workers read different shards of the data


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(
    not _unshare_works(),
    reason="needs root and `unshare --mount` to make the runs folder read-only for the worker",
)


class Cluster:
    """A chief and a worker training CONFIG into RUNS."""

    def __init__(self, config: Path, runs: Path) -> None:
        tf_configs = local_tf_configs(2)
        self.procs: list[subprocess.Popen[str]] = []
        for index in (1, 0):  # the worker first: it waits for the chief
            command = [sys.executable, "-m", "tfod", "train", str(config), "--runs-dir", str(runs)]
            if index:  # the runs folder read-only for the worker, in its own mount namespace
                script = f'mount --bind "{runs}" "{runs}" && mount -o remount,bind,ro "{runs}" && exec "$@"'
                command = ["unshare", "--mount", "sh", "-c", script, "sh", *command]
            env = {**os.environ, "TF_CONFIG": tf_configs[index], "TFOD_PROGRESS_SECONDS": "0"}
            self.procs.insert(0, subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            ))  # fmt: skip

    @property
    def chief(self) -> subprocess.Popen[str]:
        return self.procs[0]

    @property
    def worker(self) -> subprocess.Popen[str]:
        return self.procs[1]

    def wait(self, timeout: float = 600) -> list[tuple[int, str]]:
        """Each process's exit status and output (its lines joined: rich wraps them at 80)."""
        return [
            (p.wait(timeout), " ".join((p.stdout.read() if p.stdout else "").split()))
            for p in self.procs
        ]


def _config(demo_data: Path, name: str, steps: int, preset: str = SMOKE) -> TfodConfig:
    """The demo trained `steps` steps at batch 8, evaluated every 5."""
    return smoke_config(
        demo_data, name=name, model={"preset": preset},
        train={"batch_size": 8, "steps": steps, "learning_rate": 0.02 if preset == SMOKE else "auto"},
        eval={"every_steps": 5},
    )  # fmt: skip


def _project(demo_data: Path, tmp_path: Path, steps: int, preset: str = SMOKE) -> tuple[Path, Path]:
    """A tfod.yaml of `_config` and its runs folder."""
    runs = tmp_path / "runs"
    runs.mkdir()
    config = tmp_path / "tfod.yaml"
    config.write_text(dump_config(_config(demo_data, "mw", steps, preset)))
    return config, runs


def _trains_like_one(
    two: RunDir, one: RunDir, steps: int, points: int, per_replica: float = 1.0
) -> None:
    """The two workers' loss at each logged step, times `per_replica`, is within LOSS_TOLERANCE of
    one worker's."""
    losses_two, losses_one = dict(loss_history(two)), dict(loss_history(one))
    common = sorted(set(losses_two) & set(losses_one))  # a stop may cut one logging point
    assert len(common) >= points and common[-1] == steps, (sorted(losses_two), sorted(losses_one))
    for step in common:
        loss_two = losses_two[step] * per_replica
        assert abs(loss_two - losses_one[step]) <= LOSS_TOLERANCE * losses_one[step], (
            step, losses_two, losses_one,
        )  # fmt: skip


def _step(run: RunDir) -> int:
    try:
        return int(run.read().get("step", 0))
    except (OSError, ValueError):
        return 0


@needs_unshare
def test_two_workers_stop_resume_and_train_like_one(demo_data: Path, tmp_path: Path) -> None:
    config, runs = _project(demo_data, tmp_path, steps=40)
    run = RunDir(runs / "mw")
    first = Cluster(config, runs)
    wait_for(lambda: _step(run) >= 10, "step 10")
    first.worker.send_signal(signal.SIGTERM)  # a stop asked of one worker stops them all
    (chief_code, chief_out), (worker_code, worker_out) = first.wait()
    assert (chief_code, worker_code) == (EXIT_STOPPED, EXIT_STOPPED), chief_out + worker_out
    stopped = run.read()
    assert stopped["status"] == "stopped" and stopped["step"] < 40
    assert stopped["placement"] == {
        "strategy": "multi_worker", "workers": 2, "replicas": 2, "per_replica_batch": 4,
        "precision": "float32",
    }  # fmt: skip

    second = Cluster(config, runs)
    (chief_code, chief_out), (worker_code, worker_out) = second.wait()
    assert (chief_code, worker_code) == (0, 0), chief_out + worker_out
    assert f"Resuming from step {stopped['step']}" in chief_out
    assert f"starting from its checkpoint ckpt-{stopped['step']}" in worker_out
    assert run.read()["status"] == "finished"
    assert max(run.checkpoints()) == 40  # one set of checkpoints: the chief's
    assert not list(runs.glob("*/worker*")) and sorted(p.name for p in runs.iterdir()) == ["mw"]

    from tfod.train.trainer import train

    single = train(
        _config(demo_data, "one", 40), tmp_path / "single", inline_eval=False, progress=False
    )
    _trains_like_one(run, single.run, 40, points=6)


@needs_unshare
def test_two_workers_train_yolo_like_one(demo_data: Path, tmp_path: Path) -> None:
    """YOLO's loss is summed over a replica's images and the replicas' gradients are summed: two
    workers at global batch 8 take one worker's steps at batch 8, at the same rate. The loss they
    log is the replicas' mean, a sum over 4 images where one worker's sums 8."""
    yolo = "yolov7-tiny-416" + SMOKE_SUFFIX
    config, runs = _project(demo_data, tmp_path, steps=10, preset=yolo)
    (chief_code, chief_out), (worker_code, worker_out) = Cluster(config, runs).wait()
    assert (chief_code, worker_code) == (0, 0), chief_out + worker_out
    run = RunDir(runs / "mw")
    state = run.read()
    assert state["status"] == "finished" and state["placement"]["per_replica_batch"] == 4

    from tfod.train.trainer import train

    single = train(
        _config(demo_data, "one", 10, yolo), tmp_path / "single", inline_eval=False, progress=False
    )
    assert single.run.read()["plan"]["learning_rate"] == state["plan"]["learning_rate"]
    _trains_like_one(run, single.run, 10, points=2, per_replica=2)


@needs_unshare
def test_a_dead_worker_stops_the_chief_and_the_same_command_resumes(
    demo_data: Path, tmp_path: Path
) -> None:
    config, runs = _project(demo_data, tmp_path, steps=20)
    run = RunDir(runs / "mw")
    first = Cluster(config, runs)
    wait_for(lambda: run.exists() and run.checkpoints(), "a checkpoint")
    first.worker.kill()
    (chief_code, chief_out), _ = first.wait(timeout=300)
    assert chief_code == 1
    assert "a worker of the cluster stopped" in chief_out and "Traceback" not in chief_out
    assert run.read()["status"] == "failed"
    saved = max(run.checkpoints())

    second = Cluster(config, runs)
    (chief_code, chief_out), (worker_code, worker_out) = second.wait()
    assert (chief_code, worker_code) == (0, 0), f"chief: {chief_out}\nworker: {worker_out}"
    assert f"Resuming from step {saved}" in chief_out
    assert run.read()["status"] == "finished"


def test_a_failing_worker_prints_the_end_of_its_log_before_its_folder_goes(
    demo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker keeps its log in a temporary folder; what TensorFlow said there is printed."""
    from tfod.data.dataset import load_summary
    from tfod.train import trainer
    from tfod.train.cluster import Placement, read_tf_config
    from tfod.train.loop import Job, TrainingLoop

    def failing_run(*_: object) -> None:
        os.write(2, b"E0000 collective_ops: [the reason] the chief is down\n")
        raise RuntimeError("training failed")

    monkeypatch.setattr(TrainingLoop, "train", failing_run)
    cluster = read_tf_config({"TF_CONFIG": local_tf_configs(2)[1]})
    job = Job(Placement("multi_worker", 0, cluster))
    config = smoke_config(demo_data, name="mw", train={"batch_size": 8, "steps": 4})
    with pytest.raises(RuntimeError, match="training failed"):
        trainer._train_worker(
            config, load_summary(demo_data), RunDir(tmp_path / "mw"), None, None, job
        )
    printed = " ".join(capsys.readouterr().err.split())
    assert (
        "worker 1: the end of its TensorFlow log: E0000 collective_ops: [the reason] the chief is down"
        in printed
    )
    assert not (tmp_path / "mw").exists()  # it wrote nothing into the chief's run
