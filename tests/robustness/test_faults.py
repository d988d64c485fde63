"""Faults: kill -9 of convert, train and export; SIGTERM; a full disk; two trainers; a damaged
checkpoint. For each: the exit status, the one-line message, and that nothing was lost or left
half-written. Disk-full cases run twice: on a real 2 MB tmpfs (mounted where the tests run as
root, as in CI) and with an injected ENOSPC error (everywhere)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import smoke_config
from tests.data.sources import jpeg_bytes
from tests.helpers import run_tfod, snapshot, spawn, wait_for
from tfod.atomic import TMP_PREFIX
from tfod.cli import EXIT_STOPPED
from tfod.config.schema import dump_config
from tfod.data.convert import ConvertOptions, convert
from tfod.errors import TfodError
from tfod.runs.rundir import RunDir


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _leftovers(folder: Path) -> list[Path]:
    return list(folder.rglob(f"{TMP_PREFIX}*"))


# --- convert ----------------------------------------------------------------------------------
def _big_coco(src: Path, n: int) -> Path:
    """`n` 480x360 PNGs (slow enough to decode and re-encode that a kill lands mid-way)."""
    import io

    from PIL import Image

    (src / "images").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(480, 360, 0))).save(buffer, format="PNG")
    png = buffer.getvalue()
    images, anns = [], []
    for i in range(1, n + 1):
        # The same pixels, distinct files: bytes after IEND are ignored by decoders.
        (src / "images" / f"{i}.png").write_bytes(png + str(i).encode())
        images.append({"id": i, "file_name": f"{i}.png", "width": 480, "height": 360})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 50, 50]})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    (src / "annotations.json").write_text(json.dumps(doc))
    return src


def test_kill_9_of_convert_kills_its_workers_and_the_next_run_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _big_coco(tmp_path / "src", 160)
    out = tmp_path / "out"
    convert(_big_coco(tmp_path / "small", 2), out, ConvertOptions(workers=1, progress=False))
    kept = snapshot(out)
    proc = spawn("data", "convert", str(src), "--out", str(out), "--workers", "2")
    parent = psutil.Process(proc.pid)
    wait_for(lambda: len(parent.children()) >= 2, "the worker processes", 120)
    workers = [c.pid for c in parent.children(recursive=True)]
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to die", 20)

    assert snapshot(out) == kept, "the dataset already at --out was touched"
    assert _leftovers(tmp_path), "the killed convert was not mid-way (nothing to clean up)"
    code, output = run_tfod(["data", "convert", str(src), "--out", str(out)], capsys)
    assert code == 0, output
    assert "left by a tfod process that was killed" in output
    assert not _leftovers(tmp_path)
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["images"] > 100


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A `size` tmpfs at `path` (root only), unmounted afterwards."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode:
        pytest.skip("mounting a tmpfs needs root: the injected-ENOSPC twin of this test runs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_during_convert_is_one_line_and_keeps_the_old_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _big_coco(tmp_path / "src", 40)  # ~20 MB of PNG: far more than the disk holds
    with _small_disk(tmp_path / "disk") as disk:
        out = disk / "dataset"
        convert(_big_coco(tmp_path / "small", 2), out, ConvertOptions(workers=1, progress=False))
        kept = snapshot(out)
        code, output = run_tfod(["data", "convert", str(src), "--out", str(out)], capsys)
        assert code == 1 and "Traceback" not in output
        assert "No space left on device" in output and str(disk) in output, output
        assert snapshot(out) == kept
        assert not _leftovers(disk)


def test_an_injected_enospc_during_convert_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    class FullDisk:
        def __init__(self, path: str) -> None:
            self.path = path

        def write(self, record: bytes) -> None:
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{self.path}; No space left on device"
            )

        def close(self) -> None:
            pass

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
    out = tmp_path / "out"
    code, output = run_tfod(
        ["data", "convert", str(_big_coco(tmp_path / "src", 3)), "--out", str(out)], capsys
    )
    assert code == 1 and "Traceback" not in output
    assert "cannot write: " in output and "No space left on device" in output
    assert not out.exists() and not _leftovers(tmp_path)


def test_a_read_only_out_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permission bits, so the read-only file system is injected."""
    import tempfile

    def read_only(*args: object, dir: str = "", **kw: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system", dir)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    src = _big_coco(tmp_path / "src", 2)
    code, output = run_tfod(
        ["data", "convert", str(src), "--out", str(tmp_path / "ro" / "out")], capsys
    )
    assert code == 1 and "Traceback" not in output
    assert f"error: {tmp_path / 'ro'}: Read-only file system" in output


# --- train ------------------------------------------------------------------------------------
def _config_file(tmp_path: Path, data: Path, **train: object) -> Path:
    config = smoke_config(
        data, name="faults", train={"steps": 4, "batch_size": 4, **train}, eval={"every_steps": 4}
    )
    path = tmp_path / "tfod.yaml"
    path.write_text(dump_config(config))
    return path


@pytest.mark.slow
def test_sigterm_stops_resumably_a_second_trainer_is_refused_and_kill_9_resumes(
    tmp_path: Path, demo_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, demo_data, steps=4000)
    runs = tmp_path / "runs"
    run = RunDir(runs / "faults")
    step = lambda: int(run.read().get("step", 0))  # noqa: E731

    first = spawn("train", str(config), "--runs-dir", str(runs), "--no-eval")
    wait_for(lambda: step() >= 4, "the first checkpoint")
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == EXIT_STOPPED, output
    assert "Run the same command to resume" in output and "Traceback" not in output
    assert "train: step" in output, "without a terminal, progress is printed as lines"
    stopped_at = step()
    assert run.read()["status"] == "stopped" and stopped_at in run.checkpoints()

    second = spawn("train", str(config), "--runs-dir", str(runs), "--no-eval")
    wait_for(lambda: "pid" in (run.path / ".lock").read_text(), "the second trainer's lock")
    wait_for(lambda: f"pid {second.pid}" in (run.path / ".lock").read_text(), "the lock")
    code, refused = run_tfod(["train", str(config), "--runs-dir", str(runs)], capfd)
    assert code == 1 and "Traceback" not in refused
    assert f"pid {second.pid} on host" in refused, refused
    wait_for(lambda: max(run.checkpoints(), default=0) > stopped_at, "a checkpoint after resuming")
    second.kill()
    second.wait()
    last = max(run.checkpoints())
    assert run.read()["status"] == "running"  # what a kill -9 leaves; the lock is gone with it

    third = spawn(
        "train", str(config), "--runs-dir", str(runs), "--no-eval", "--steps", str(last + 4)
    )
    output = third.communicate(timeout=300)[0]
    assert third.returncode == 0, output
    assert f"Resuming from step {last}" in output
    assert run.read()["status"] == "finished" and step() == last + 4
    assert [s["start_step"] for s in run.read()["sessions"]] == [0, stopped_at, last]


def test_a_second_trainer_is_refused_and_a_dead_holder_does_not_block(
    tmp_path: Path, demo_data: Path
) -> None:
    from tfod.train.trainer import train

    run = RunDir(tmp_path / "runs" / "faults")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from tfod.runs.rundir "
         "import RunDir; cm = RunDir(Path(sys.argv[1])).lock(); cm.__enter__(); print('held', "
         "flush=True); time.sleep(600)", str(run.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TfodError, match=f"pid {holder.pid} on host"):
            train(
                smoke_config(demo_data, name="faults"), tmp_path / "runs", progress=False, steps=1
            )
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in (run.path / ".lock").read_text()  # the dead holder's record
    with run.lock():  # ...does not block: the kernel released its lock
        pass


def test_a_full_disk_during_training_is_not_taken_for_out_of_memory(
    tmp_path: Path, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected: TensorFlow reports ENOSPC as ResourceExhaustedError, as it does for OOM."""
    import tensorflow as tf

    from tfod.train import trainer
    from tfod.train.loop import TrainingLoop

    def full_disk(*args: object, **kw: object) -> None:
        raise tf.errors.ResourceExhaustedError(
            None, None, "ckpt-4.data-00000-of-00001.tempstate; No space left on device"
        )

    monkeypatch.setattr(TrainingLoop, "train", full_disk)
    config = smoke_config(demo_data, name="faults", train={"batch_size": 8, "steps": 4})
    with pytest.raises(TfodError, match=r"the disk is full .*No space left on device.*resume"):
        trainer.train(config, tmp_path / "runs", progress=False)
    state = RunDir(tmp_path / "runs" / "faults").read()
    assert state["plan"]["batch_size"] == 8 and "oom_events" not in state
    assert state["status"] == "failed"


@pytest.mark.slow
def test_a_real_full_disk_during_training_stops_with_the_message(
    tmp_path: Path, demo_data: Path
) -> None:
    config = _config_file(tmp_path, demo_data, batch_size=8)
    with _small_disk(tmp_path / "disk") as disk:
        result = subprocess.run(
            [sys.executable, "-m", "tfod", "train", str(config), "--runs-dir", str(disk), "--no-eval"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "the disk is full" in result.stderr and "No space left on device" in result.stderr
        state = RunDir(disk / "faults").read()
        assert state["plan"]["batch_size"] == 8 and "oom_events" not in state
        assert not _leftovers(disk)


# --- damaged checkpoints ----------------------------------------------------------------------
def _damage(prefix: Path) -> None:
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


@pytest.fixture
def damaged_run(smoke_run: Path, tmp_path: Path) -> Path:
    """A copy of the smoke run whose ckpt-4 (its latest) is cut in half."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    _damage(run / "ckpt-4")
    return run


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{run}", "--checkpoint", "4"],
        ["export", "{run}", "--checkpoint", "4", "--format", "tflite", "--quant", "fp32"],
        ["predict", "{run}", "{run}/plots", "--checkpoint", "4", "--out", "{run}/p"],
    ],
    ids=["eval", "export", "predict"],
)
def test_a_damaged_checkpoint_is_named(
    command: list[str], damaged_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_tfod([c.format(run=damaged_run) for c in command], capsys)
    assert code == 1 and "Traceback" not in output
    assert f"error: {damaged_run / 'ckpt-4.index'}: checkpoint is damaged" in output, output


def test_latest_falls_back_to_the_newest_intact_checkpoint(
    damaged_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step, prefix = RunDir(damaged_run).checkpoint("latest")
    assert (step, prefix.name) == (2, "ckpt-2")
    assert "ckpt-4 is damaged" in capsys.readouterr().err


def test_resume_sets_a_damaged_checkpoint_aside_and_continues(
    damaged_run: Path, demo_data: Path
) -> None:
    from tfod.train.trainer import train

    keep_all = {"task": {"model": {"detection_generator": {"pre_nms_score_threshold": 0.0}}}}
    config = smoke_config(demo_data, overrides=keep_all)
    result = train(
        config,
        damaged_run.parent,
        run_name=damaged_run.name,
        steps=6,
        inline_eval=False,
        progress=False,
    )
    assert result.status == "finished" and result.step == 6
    assert (damaged_run / "damaged" / "ckpt-4.index").is_file(), "the damaged checkpoint is kept"
    sessions = RunDir(damaged_run).read()["sessions"]
    assert sessions[-1]["start_step"] == 2


# --- export and predict -----------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_of_export_keeps_the_previous_export_and_the_next_cleans_up(
    smoke_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    capsys = capfd  # export prints beside TensorFlow's redirected file descriptors
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    previous = run / "export"
    previous.mkdir()
    (previous / "model_fp16.tflite").write_bytes(b"an earlier export, from step 2")
    manifest = {
        "checkpoint": {"path": str(run / "ckpt-2"), "step": 2, "which": "2"},
        "artefacts": [{"file": "model_fp16.tflite", "format": "tflite", "quantization": "fp16"}],
    }
    (previous / "export.json").write_text(json.dumps(manifest))
    kept = snapshot(previous)

    proc = spawn("export", str(run), "--format", "tflite", "--quant", "fp32")
    wait_for(lambda: _leftovers(run), "the export's temporary folder", 120)
    time.sleep(2)
    proc.kill()
    proc.wait()
    assert snapshot(previous) == kept, "a killed export touched the previous one"

    code, output = run_tfod(["export", str(run), "--format", "tflite", "--quant", "fp32"], capsys)
    assert code == 0, output
    assert "left by a tfod process that was killed" in output and not _leftovers(run)
    assert "removed model_fp16.tflite: it was exported from another checkpoint (step 2)" in output
    assert json.loads((previous / "export.json").read_text())["removed"] == ["model_fp16.tflite"]

    # Fewer formats from the same checkpoint: the earlier artefacts stay.
    code, output = run_tfod(["export", str(run), "--format", "tflite", "--quant", "fp16"], capsys)
    assert code == 0, output
    files = {a["file"] for a in json.loads((previous / "export.json").read_text())["artefacts"]}
    assert files == {"model_fp32.tflite", "model_fp16.tflite"}
    assert (previous / "model_fp32.tflite").stat().st_size > 100_000


def test_predict_fails_when_nothing_could_be_predicted(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    args = ["predict", str(smoke_run), str(tmp_path / "broken.jpg"), str(tmp_path / "ghost.png")]
    code, output = run_tfod([*args, "--out", str(tmp_path / "p")], capsys)
    assert code == 1 and "Traceback" not in output
    assert "2 input(s) skipped" in output
    assert "error: nothing was predicted: no input could be read" in output


def test_predict_out_that_is_a_file_is_one_line(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("mine")
    code, output = run_tfod(
        ["predict", str(smoke_run), str(tmp_path), "--out", str(tmp_path / "taken")], capsys
    )
    assert code == 1 and "Traceback" not in output
    assert f"error: {tmp_path / 'taken'}: --out must be a folder" in output
    assert (tmp_path / "taken").read_text() == "mine"


def test_tables_are_not_cut_without_a_terminal() -> None:
    """`docker compose logs`: the verify table's numbers print whole, not as "+0.0…"."""
    script = (
        "from tfod.console import console; from tfod.export.report import print_verification; "
        "from tfod.export.verify import Verified; "
        "rows = [Verified('checkpoint ckpt-500', None, 0.70912, 0.92231, 119.41, 119.2), "
        "Verified('model_int8.tflite', 3_000_000, 0.71234, 0.92101, 6.512, 3.6, 0.00322, 18.3612)]; "
        "print_verification(console, rows, 32)"
    )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stderr and "18.36x" in result.stderr and "+0.003" in result.stderr
