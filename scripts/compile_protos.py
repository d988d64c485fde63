"""Compile src/tfod/protos/*.proto with grpcio-tools' bundled protoc (no downloaded binary).

Usage: python scripts/compile_protos.py [--out DIR]

Without --out the generated *_pb2.py / *_pb2.pyi land beside the .proto files, where they are
committed; tests/protos checks that the committed files are what this script produces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parent.parent / "src"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SRC, help="output root (default: src/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(SRC)) for p in (SRC / "tfod" / "protos").glob("*.proto"))
    code = protoc.main(
        ["protoc", f"-I{SRC}", f"--python_out={args.out}", f"--pyi_out={args.out}", *protos]
    )
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
