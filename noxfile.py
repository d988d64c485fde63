"""Task runner. `nox` runs lint and tests; the other sessions are asked for by name.

Every session installs tfod with the pinned versions in constraints.txt (`nox -s lock` remakes it).
"""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".[{extras}]" if extras else ".", *CONSTRAINTS)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and strict mypy on src/tfod."""
    _install(session, "lint")
    session.run("ruff", "check", "src", "tests", "scripts", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "scripts", "bench", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on generated data (everything but the docker-marked tests)."""
    _install(session, "test")
    session.run("pytest", "-m", "not docker", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on built-in data: make the demo dataset, train a detector, evaluate it."""
    _install(session)
    session.run("tfod", "demo", *session.posargs)
    session.run("tfod", "data", "stats", "data/demo")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks printing tables: converter 1 vs N workers; the demo's time and AP.

    `nox -s bench -- convert` or `-- demo` runs one of them.
    """
    _install(session)
    chosen = session.posargs or ["convert", "demo"]
    for name in chosen:
        session.run("python", f"bench/{name}_bench.py")


@nox.session(python=PYTHON)
def protos(session: nox.Session) -> None:
    """Regenerate src/tfod/protos/*_pb2.py[i] with grpcio-tools' protoc; commit the result."""
    session.install("grpcio-tools", *CONSTRAINTS)
    session.run("python", "scripts/compile_protos.py")


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Re-resolve constraints.txt (all extras, Linux x86_64, Python 3.11) with nox's own uv."""
    session.run(
        sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--all-extras", "--upgrade",
        "--python-version", PYTHON, "--python-platform", "x86_64-manylinux_2_28",
        "-o", "constraints.txt",
    )  # fmt: skip
