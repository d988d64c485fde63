"""Task runner. `nox` runs lint and tests; the other sessions are asked for by name.

Every session installs tfod with the pinned versions in constraints.txt (`nox -s lock` remakes it).
Inside the `test` image (TFOD_PREINSTALLED=1) sessions run in the image's own environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
PREINSTALLED = os.environ.get("TFOD_PREINSTALLED") == "1"
VENV = "none" if PREINSTALLED else None  # None: nox's default backend


def _install(session: nox.Session, extras: str = "") -> None:
    if not PREINSTALLED:
        session.install("-e", f".[{extras}]" if extras else ".", *CONSTRAINTS)


@nox.session(python=PYTHON, venv_backend=VENV)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and strict mypy on src/tfod."""
    _install(session, "lint")
    session.run("ruff", "check", "src", "tests", "scripts", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "scripts", "bench", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON, venv_backend=VENV)
def tests(session: nox.Session) -> None:
    """The test suite on generated data (everything but the docker-marked tests).

    Most tests drive one TensorFlow process that keeps about one core busy, so pytest-xdist runs
    a test file per core (up to 4: each worker holds its own TensorFlow, ~2 GB); a file's tests
    stay together and share its fixtures. `-- -n 0` runs them in one process.
    """
    _install(session, "test")
    _mediapipe(session)
    workers = min(4, os.cpu_count() or 1)
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    # --durations: CI's log names the tests that cost its time.
    session.run(
        "pytest", "-m", "not docker and not network", "--durations=25", *parallel, *session.posargs
    )


def _mediapipe(session: nox.Session) -> None:
    """MediaPipe's own environment (its pins clash with TensorFlow's), made once under .nox/ by
    tfod's installer, for the export and verify tests (TFOD_MEDIAPIPE_PYTHON)."""
    if os.environ.get("TFOD_MEDIAPIPE_PYTHON"):  # the images carry one
        return
    folder = Path(".nox/mediapipe-runtime").resolve()
    session.run("python", "-m", "tfod.export.mediapipe_runtime", str(folder))
    session.env["TFOD_MEDIAPIPE_PYTHON"] = str(folder / "bin" / "python")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on built-in data: make the demo dataset, train a detector, evaluate it."""
    _install(session)
    session.run("tfod", "demo", *session.posargs)
    session.run("tfod", "data", "stats", "data/demo")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks printing tables: converter 1 vs N workers; the demo's time and AP; every export
    artefact's size, AP and latency; fine-tuning from a zoo entry vs. from scratch; float vs.
    post-training int8 vs. QAT int8; one vs. two workers and mixed precision; accuracy per
    minute of training for each mobile preset; each detector family's accuracy per minute and
    exported latency.

    `nox -s bench -- convert`, `-- demo`, `-- deploy`, `-- pretrained`, `-- qat`, `-- distribute`,
    `-- accuracy` or `-- families` runs one; arguments after the name go to its script, e.g.
    `nox -s bench -- accuracy --budgets 5m --presets retinanet-mobilenetv2-256`.
    """
    _install(session)
    names = ["convert", "demo", "deploy", "pretrained", "qat", "distribute", "accuracy", "families"]
    if not session.posargs:
        for name in names:
            session.run("python", f"bench/{name}_bench.py")
        return
    name, *arguments = session.posargs
    if name not in names:
        session.error(f"unknown benchmark {name!r}; choose one of {', '.join(names)}")
    session.run("python", f"bench/{name}_bench.py", *arguments)


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
    # MediaPipe's own environment (tfod.export.mediapipe_runtime), hashed, without what tfod never imports
    unused = ["jax", "jaxlib", "ml-dtypes", "opt-einsum", "scipy", "sentencepiece", "sounddevice",
              "cffi", "pycparser", "opencv-contrib-python"]  # fmt: skip
    session.run(
        sys.executable, "-m", "uv", "pip", "compile", "src/tfod/export/mediapipe-requirements.in",
        "--generate-hashes", "--upgrade", "--python-version", PYTHON,
        "--python-platform", "x86_64-manylinux_2_28", "-o", "src/tfod/export/mediapipe-requirements.txt",
        *[f"--no-emit-package={name}" for name in unused],
    )  # fmt: skip


def _build_images(session: nox.Session) -> None:
    session.run("bash", "scripts/make_base_image.sh", external=True)
    session.run("bash", "scripts/build_images.sh", external=True)


@nox.session(python=False)
def images(session: nox.Session) -> None:
    """Build the images (base image made locally if it cannot be pulled); `docker` rebuilds an
    unchanged tree from cache in seconds, so CI builds them beside the tests."""
    _build_images(session)


@nox.session(python=PYTHON)
def docker(session: nox.Session) -> None:
    """Build the images (as `images`) and run the container tests: each image, `compose up`
    (trainer, evaluator, TensorBoard, exporter), the multi-worker overlay, the zoo cache."""
    _install(session, "test")
    _build_images(session)
    # -rP --durations: the log shows each container test's time and compose's time to first AP.
    # Three workers: the compose stacks (much of their time is containers starting and polling)
    # run side by side, one per worker (tests/docker/conftest.py).
    session.run(
        "pytest", "-m", "docker", "-n", "3", "--dist", "loadgroup", "-rP", "--durations=0",
        "tests/docker", *session.posargs,
    )  # fmt: skip
