"""Every run at a glance: one summary per run folder, and what differs between runs.

Works on runs still training, runs that crashed and runs from older tfod versions: whatever a
run folder lacks is None (shown blank), never an error.
"""

from __future__ import annotations

import math
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tfod import atomic
from tfod.errors import TfodError
from tfod.runs.rundir import EXPERIMENT_YAML, RunDir

CRASHED = "crashed"


@dataclass(frozen=True)
class RunSummary:
    """One line of `tfod runs list`."""

    name: str
    path: str
    status: str | None
    preset: str | None
    input_size: int | None
    batch: int | None
    steps_done: int | None
    steps_total: int | None
    best_metric: str | None
    best_value: float | None
    best_ap: float | None
    best_ap50: float | None
    best_step: int | None
    final_loss: float | None
    duration_s: float | None
    created: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SORT_KEYS = tuple(RunSummary.__dataclass_fields__)


def summarize(run: RunDir) -> RunSummary:
    """The summary of one run folder; fields it cannot know are None."""
    try:
        state = run.read()
    except TfodError:
        state = {}
    plan = state.get("plan") or {}
    rows = run.metrics()
    metric = state.get("eval_metric") or "AP"
    best_row = _best_row(rows, metric)
    loss = state.get("loss")
    return RunSummary(
        name=run.name,
        path=str(run.path),
        status=_status(state),
        preset=plan.get("preset"),
        input_size=_input_size(run),
        batch=plan.get("batch_size"),
        steps_done=state.get("step")
        if state.get("step") is not None
        else (rows[-1].get("step") if rows else None),
        steps_total=plan.get("steps"),
        best_metric=metric if best_row else None,
        best_value=_metric(best_row, metric),
        best_ap=_metric(best_row, "AP"),
        best_ap50=_metric(best_row, "AP50"),
        best_step=best_row.get("step") if best_row else None,
        final_loss=float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else None,
        duration_s=_duration(state.get("sessions") or []),
        created=state.get("created"),
    )


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Summaries of every run folder directly under `runs_dir` (those with run.json or metrics)."""
    if not runs_dir.is_dir():
        raise TfodError("no such runs folder", runs_dir)
    runs = []
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        run = RunDir(path)
        if run.exists() or (path / "metrics.jsonl").is_file():
            runs.append(summarize(run))
    return runs


def sort_runs(runs: list[RunSummary], key: str, descending: bool = False) -> list[RunSummary]:
    """Sort by a summary field; runs lacking it go last whatever the direction."""
    if key not in SORT_KEYS:
        raise TfodError(f"cannot sort by {key!r}; choose one of {', '.join(SORT_KEYS)}")
    present = [r for r in runs if getattr(r, key) is not None]
    missing = [r for r in runs if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=descending) + missing


def resolved_settings(run: RunDir) -> dict[str, Any]:
    """The run's settings after presets were resolved: plan + Model Garden config, flattened."""
    settings: dict[str, Any] = {}
    for key, value in (run.read().get("plan") or {}).items():
        settings[f"plan.{key}"] = value
    path = run.path / EXPERIMENT_YAML
    if path.is_file():
        try:
            experiment = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            experiment = {}
        settings.update(_flatten(experiment))
    return settings


def setting_differences(runs: list[RunDir]) -> dict[str, list[Any]]:
    """Resolved settings whose values are not the same in all `runs` (key -> value per run)."""
    settings = [resolved_settings(r) for r in runs]
    keys = sorted(set().union(*settings))
    noise = ("plan.dataset_fingerprint", "task.init_checkpoint")
    out = {}
    for key in keys:
        values = [s.get(key) for s in settings]
        if any(v != values[0] for v in values) and not key.startswith(noise):
            out[key] = values
    return out


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _best_row(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    scored = [r for r in rows if _metric(r, metric) is not None]
    return max(scored, key=lambda r: _metric(r, metric) or 0.0) if scored else None


def _metric(row: dict[str, Any] | None, name: str) -> float | None:
    value = (row or {}).get("metrics", {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _status(state: dict[str, Any]) -> str | None:
    status = state.get("status")
    process = state.get("process") or {}
    if status == "running" and process.get("host") == socket.gethostname():
        pid = process.get("pid")
        if isinstance(pid, int) and not atomic.alive(pid):
            return CRASHED
    return status


def _duration(sessions: list[dict[str, Any]]) -> float | None:
    total, known = 0.0, False
    for session in sessions:
        start, end = _time(session.get("started")), _time(session.get("ended"))
        if start is not None:
            end = end or datetime.now(start.tzinfo)
            total += max(0.0, (end - start).total_seconds())
            known = True
    return total if known else None


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _input_size(run: RunDir) -> int | None:
    path = run.path / EXPERIMENT_YAML
    if not path.is_file():
        return None
    try:
        size = (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["task"]["model"][
            "input_size"
        ]
        return int(size[0])
    except (yaml.YAMLError, KeyError, TypeError, IndexError, ValueError):
        return None
