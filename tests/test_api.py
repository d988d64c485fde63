"""The Python API (`import tfod`, docs/python.md): the README's snippet runs as written (with the
smoke preset and a few steps), `import tfod` stays quick, and progress draws in Jupyter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import readme_block
from tfod import console as console_module
from tfod.train.progress import ProgressBar


def test_import_tfod_is_quick_and_its_verbs_stay_functions_beside_the_subpackages() -> None:
    """`tfod.train` is the function even once `tfod.train.trainer` (the subpackage) is imported;
    TensorFlow waits for the first function that needs it."""
    code = (
        "import sys, types, tfod\n"
        "assert 'tensorflow' not in sys.modules, 'import tfod imported TensorFlow'\n"
        "import tfod.train.trainer, tfod.export.exporter, tfod.predict.predict\n"
        "import tfod.evaluate.evaluator\n"
        "from tfod.train import trainer\n"
        "for name in tfod.__all__[2:]:\n"
        "    assert isinstance(getattr(tfod, name), types.FunctionType), name\n"
        "assert trainer.train is not tfod.train and tfod.train.__module__ == 'tfod.api'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr[-2000:]


@pytest.mark.parametrize(
    ("jupyter", "widgets", "terminal", "live"),
    [
        (True, True, False, True),  # a notebook with ipywidgets: rich's live widget
        (True, False, False, False),  # without it: plain lines
        (False, False, True, True),  # a terminal
        (False, False, False, False),  # a log file, CI, `docker compose logs`
    ],
)
def test_training_progress_draws_live_where_it_can(
    monkeypatch: pytest.MonkeyPatch, jupyter: bool, widgets: bool, terminal: bool, live: bool
) -> None:
    console = console_module.console
    monkeypatch.setattr(console, "is_jupyter", jupyter)
    monkeypatch.setattr(console, "_force_terminal", terminal)
    found = object() if widgets else None
    monkeypatch.setattr(console_module.importlib.util, "find_spec", lambda name: found)
    assert console_module.live_display() is live
    assert ProgressBar(10, enabled=True).plain is not live


@pytest.mark.slow
def test_the_readme_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tfod.predict.models import Detections

    code = readme_block("In a notebook or a script", "python")
    for old, new in [
        ('preset="retinanet-mobilenetv2-256"', 'preset="retinanet-mobilenetv2-256-smoke"'),
        ('time="10m"', "steps=4"),
    ]:
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    image = np.zeros((120, 160, 3), np.uint8)
    names: dict[str, object] = {"image": image}
    exec(compile(code, "README.md", "exec"), names)

    result, rows, found = names["result"], names["rows"], names["found"]
    assert result.status == "finished" and result.step == 4  # type: ignore[attr-defined]
    found_names = [row.name for row in rows]  # type: ignore[attr-defined]
    assert found_names[0].startswith("checkpoint ckpt-"), found_names  # the best evaluated
    assert found_names[1:] == ["model_int8.tflite", "model_int8.tflite · MediaPipe"]
    assert isinstance(found, Detections)
    assert found.boxes.shape[1:] == (4,) and (found.boxes[:, 2:] <= [120, 160]).all()
