"""The run folder's lock: one trainer per run, and a run that failed before writing leaves no
folder behind (a failed `tfod qat` used to leave `runs/X-qat/` holding only `.lock`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import smoke_config
from tfod.errors import TfodError
from tfod.runs.rundir import LOCK, RunDir


def test_a_run_that_fails_before_its_first_file_leaves_no_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "x-qat")
    with pytest.raises(RuntimeError), run.lock():
        assert (run.path / LOCK).is_file()
        raise RuntimeError("pre-flight failed")
    assert not run.path.exists()


def test_a_run_folder_that_existed_or_got_files_is_kept(tmp_path: Path) -> None:
    kept = RunDir(tmp_path / "kept")
    kept.path.mkdir()
    with kept.lock():
        pass
    assert kept.path.is_dir()
    written = RunDir(tmp_path / "written")
    with written.lock():
        (written.path / "run.json").write_text("{}")
    assert (written.path / "run.json").is_file()


def test_a_training_refused_by_its_pre_flight_checks_leaves_no_run(
    demo_data: Path, tmp_path: Path
) -> None:
    from tfod.train.trainer import train

    config = smoke_config(demo_data, name="refused", train={"batch_size": 8, "learning_rate": 9.0})
    with pytest.raises(TfodError, match="pre-flight check failed"):
        train(config, tmp_path / "runs", inline_eval=False, progress=False)
    assert not (tmp_path / "runs" / "refused").exists()
