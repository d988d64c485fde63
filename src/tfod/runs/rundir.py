"""The run folder, shared by trainer, evaluator, TensorBoard and exporter.

`runs/NAME/` holds `tfod.yaml` (as given), `experiment.yaml` (the resolved Model Garden config,
written only by the trainer), `run.json` (status, sessions, versions, seed, dataset fingerprint,
plan), Model Garden's `ckpt-N` checkpoints and `train/` events, `metrics.jsonl` (one line per
evaluated checkpoint), `validation/` events, `eval/` detections, `best/` and `train.log`.
Every file is replaced atomically: any process may die at any moment and readers never see half
a file.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from tfod import atomic, lockfile
from tfod.errors import TfodError, describe

RUN_JSON = "run.json"
METRICS_JSONL = "metrics.jsonl"
CONFIG_COPY = "tfod.yaml"
EXPERIMENT_YAML = "experiment.yaml"
BEST = "best"
PARENT = "parent"  # a QAT run's copy of its float parent (`tfod qat`)
LOCK = ".lock"
FINISHED = "finished"
LOSS_TAGS = ("total_loss", "training_loss")
"""The training loss as the tasks report it: RetinaNet's and the R-CNNs' `total_loss`, YOLO's `training_loss` (Model Garden's trainer's name for a task's `loss`)."""
_CKPT = re.compile(r"ckpt-(\d+)$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of what produced a run."""
    out = {"python": platform.python_version()}
    for package in ("tfod", "tensorflow", "tf-models-official", "tf-keras", "pycocotools"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def git_revision(directory: Path) -> str | None:
    """The git revision of the folder the run was started from, if it is a checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


class RunDir:
    """Paths and atomic state of one run folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / RUN_JSON).is_file()

    def require(self) -> RunDir:
        """This run, or a TfodError if the folder holds no run."""
        if not self.exists():
            raise TfodError(
                "not a tfod run folder (no run.json); start one with `tfod train`", self.path
            )
        return self

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's trainer lock: one trainer per run folder.

        An advisory `flock` on RUN/.lock, which the kernel releases when its holder dies however
        it dies, so a lock is never stale. The file records the holder's pid and host.

        Raises:
            TfodError: another process holds it; the message names its pid and host.
        """

        def refuse(holder: str) -> None:
            raise TfodError(
                f"run {self.name!r} is being trained by another process ({holder}); wait for "
                "it to end or stop it, or pass --run NEW_NAME",
                self.path,
            )

        created = not self.path.exists()
        with lockfile.hold(self.path / LOCK, refuse):
            try:
                yield
            finally:
                # A run that failed before writing a file leaves no folder behind.
                if created and [p.name for p in self.path.iterdir()] == [LOCK]:
                    with contextlib.suppress(OSError):
                        (self.path / LOCK).unlink()
                        self.path.rmdir()

    # run.json -------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.path / RUN_JSON).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as err:
            raise TfodError(f"cannot read run.json: {err}", self.path) from err
        return state

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into run.json (atomically) and return the new content."""
        state = self.read()
        state.update(fields)
        state["updated"] = now()
        atomic.write_json(self.path / RUN_JSON, state)
        return state

    # metrics ---------------------------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        """Every line of metrics.jsonl (a damaged line is skipped, not fatal)."""
        path = self.path / METRICS_JSONL
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one evaluation to metrics.jsonl by rewriting it whole (atomic)."""
        path = self.path / METRICS_JSONL
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        atomic.write_text(path, old + json.dumps(row, sort_keys=True) + "\n")

    # checkpoints -----------------------------------------------------------------------------
    def checkpoints(self) -> dict[int, Path]:
        """Complete checkpoints by step, as listed in the `checkpoint` state file.

        TensorFlow writes that file only after a checkpoint's own files are complete, so a
        checkpoint listed there is never half-written.
        """
        state = self.path / "checkpoint"
        if not state.is_file():
            return {}
        found: dict[int, Path] = {}
        for line in state.read_text(encoding="utf-8").splitlines():
            match = re.match(r'\s*all_model_checkpoint_paths:\s*"(.+)"', line)
            if not match:
                continue
            prefix = Path(match.group(1))
            prefix = prefix if prefix.is_absolute() else self.path / prefix
            step = _CKPT.search(prefix.name)
            if step and Path(f"{prefix}.index").is_file():
                found[int(step.group(1))] = prefix
        return dict(sorted(found.items()))

    def checkpoint(self, which: str = "latest") -> tuple[int, Path]:
        """`latest`, `best` or a step number -> (step, checkpoint prefix), checked intact.

        `latest` falls back, with a message, to the newest intact checkpoint when the newest one
        is damaged; a damaged `best` or step is a `TfodError` naming the file.
        """
        from tfod.console import console

        if which == "best":
            step = (self.read().get("best") or {}).get("step")
            prefix = self.path / BEST / f"ckpt-{step}"
            if step is None or not Path(f"{prefix}.index").is_file():
                raise TfodError(
                    "no best checkpoint yet: it appears after the first evaluation", self.path
                )
            _require_intact(prefix, "pass --checkpoint latest or a step")
            return int(step), prefix
        available = self.checkpoints()
        if not available:
            raise TfodError("no checkpoint yet: training has not saved one", self.path)
        if which == "latest":
            for step in sorted(available, reverse=True):
                problem = damage(available[step])
                if problem is None:
                    return step, available[step]
                console.print(
                    f"[yellow]warning[/yellow]: {available[step]} is damaged ({problem}); "
                    "using the previous checkpoint"
                )
            raise TfodError("every checkpoint of this run is damaged", self.path)
        try:
            step = int(which)
        except ValueError:
            raise TfodError(f"--checkpoint must be latest, best or a step, got {which!r}") from None
        if step not in available:
            raise TfodError(
                f"no checkpoint at step {step}; have {', '.join(map(str, available))}", self.path
            )
        _require_intact(available[step], "pass --checkpoint latest to use the newest intact one")
        return step, available[step]

    def set_aside_damaged(self) -> list[tuple[Path, str]]:
        """Move damaged checkpoints into RUN/damaged/ (nothing is deleted) and point the
        `checkpoint` state file at the newest intact one, so a resume continues from it.

        Returns:
            The checkpoints moved, each with what is wrong with it.
        """
        moved = []
        for _, prefix in sorted(self.checkpoints().items(), reverse=True):
            problem = damage(prefix)
            if problem is None:
                break
            aside = self.path / "damaged"
            aside.mkdir(exist_ok=True)
            for part in prefix.parent.glob(prefix.name + ".*"):
                part.replace(aside / part.name)
            moved.append((prefix, problem))
        if moved:
            kept = [p.name for p in self.checkpoints().values()]
            lines = [f'model_checkpoint_path: "{kept[-1]}"\n'] if kept else []
            lines += [f'all_model_checkpoint_paths: "{name}"\n' for name in kept]
            atomic.write_text(self.path / "checkpoint", "".join(lines))
        return moved

    def write_experiment(self, experiment: Any) -> None:
        """experiment.yaml: the resolved Model Garden config; only the trainer writes it."""
        atomic.write_text(
            self.path / EXPERIMENT_YAML, yaml.safe_dump(experiment.as_dict(), sort_keys=False)
        )

    def keep_best(self, step: int, prefix: Path, metric: str, value: float) -> bool:
        """Copy checkpoint `prefix` into best/ if `value` beats the best so far; True if it did."""
        best = self.read().get("best")
        if best and best.get("metric") == metric and float(best["value"]) >= value:
            return False
        with atomic.atomic_directory(self.path / BEST) as tmp:
            copy_checkpoint(prefix, tmp)
        self.update(best={"step": step, "metric": metric, "value": value})
        return True


def copy_checkpoint(prefix: Path, folder: Path) -> None:
    """Checkpoint `prefix`'s files into `folder`, as its latest (a CheckpointState text proto)."""
    for part in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy2(part, folder / part.name)
    state = f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
    (folder / "checkpoint").write_text(state, encoding="utf-8")


def pick_checkpoint(run: RunDir, which: str) -> tuple[int, Path, str]:
    """(step, prefix, how it was chosen) for `best` (or `latest` before any evaluation),
    `latest` or a step."""
    if which == "best" and not (run.read().get("best") or {}).get("step"):
        step, prefix = run.checkpoint("latest")
        return step, prefix, "latest (no evaluation has picked a best checkpoint yet)"
    step, prefix = run.checkpoint(which)
    return step, prefix, which


def float_parent(run: RunDir) -> RunDir | None:
    """The copy of a QAT run's float parent (None for a float run)."""
    snapshot = RunDir(run.path / PARENT)
    return snapshot if run.read().get("qat") and snapshot.exists() else None


def damage(prefix: Path) -> str | None:
    """What is wrong with the checkpoint `prefix` (None: every tensor reads back, checksums
    included)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # TensorFlow raises IndexError, OpError, ValueError... for damage
        return describe(err)
    return None


def _require_intact(prefix: Path, advice: str) -> None:
    problem = damage(prefix)
    if problem is not None:
        raise TfodError(f"checkpoint is damaged ({problem}); {advice}", f"{prefix}.index")
