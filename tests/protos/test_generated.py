"""The committed *_pb2 files are exactly what scripts/compile_protos.py makes of the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "src" / "tfod" / "protos"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile_protos.py"), "--out", str(tmp_path)],
        check=True,
    )
    generated = sorted((tmp_path / "tfod" / "protos").glob("*_pb2.py*"))
    assert [p.name for p in generated] == [
        "pipeline_pb2.py",
        "pipeline_pb2.pyi",
        "string_int_label_map_pb2.py",
        "string_int_label_map_pb2.pyi",
    ]
    for path in generated:
        committed = PROTOS / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run `nox -s protos` and commit the result"
        )
