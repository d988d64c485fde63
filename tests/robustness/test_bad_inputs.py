"""Every bad input of the corpus: the exit status, one clear line (never a traceback), and that
nothing was lost or left half-written: the source is byte-for-byte as it was, a good dataset
already at --out is untouched when the command fails, and no temporary file survives."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.data.sources import WRITERS
from tests.helpers import run_tfod, snapshot
from tests.robustness.corpus import CASES, Case
from tfod.atomic import TMP_PREFIX
from tfod.data.convert import ConvertOptions, convert


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "dataset"
    convert(WRITERS["coco"](out.parent / "src"), out, ConvertOptions(workers=1, progress=False))
    return out


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, tmp_path: Path, good_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(good_dataset, tmp_path / "out")
    args = case.make(tmp_path)
    before = snapshot(tmp_path)
    code, output = run_tfod(args, capsys)

    assert "Traceback" not in output
    assert code == case.code, output
    if code:
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        assert any(re.search(case.message, line) for line in errors), output
        after = snapshot(tmp_path, skip=tmp_path / "runs")
        assert after == {k: v for k, v in before.items() if not k.startswith("runs/")}
    else:
        assert re.search(case.message, output), output
        changed = {k for k in before if not k.startswith("out/")}
        assert {k: snapshot(tmp_path)[k] for k in changed} == {k: before[k] for k in changed}
        assert (tmp_path / "out" / ".tfod-dataset").is_file()
    assert not [p for p in tmp_path.rglob(f"{TMP_PREFIX}*")], "a temporary survived"
