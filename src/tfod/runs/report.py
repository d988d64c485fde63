"""Runs as tables: the list, one run in detail, several side by side."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tfod.runs.registry import RunSummary, setting_differences, summarize
from tfod.runs.rundir import RunDir

COMPARED_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax100")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def print_run_list(console: Console, runs: list[RunSummary]) -> None:
    table = Table(title=f"{len(runs)} run(s)")
    for column in (
        "run",
        "status",
        "preset",
        "input",
        "batch",
        "steps",
        "best AP",
        "AP50",
        "@ step",
        "loss",
        "time",
        "created",
    ):
        table.add_column(
            column, justify="left" if column in ("run", "status", "preset", "created") else "right"
        )
    for r in runs:
        steps = (
            f"{_fmt(r.steps_done)}/{_fmt(r.steps_total)}" if r.steps_total else _fmt(r.steps_done)
        )
        table.add_row(
            r.name, _fmt(r.status), _fmt(r.preset), _fmt(r.input_size), _fmt(r.batch), steps,
            _fmt(r.best_ap), _fmt(r.best_ap50), _fmt(r.best_step), _fmt(r.final_loss),
            _duration(r.duration_s), (r.created or "")[:16].replace("T", " "),
        )  # fmt: skip
    console.print(table)


def print_run(console: Console, run: RunDir) -> None:
    summary = summarize(run)
    state = run.read()
    overview = Table(title=f"Run {run.name}", show_header=False)
    overview.add_column(style="bold")
    overview.add_column()
    for key, value in summary.as_dict().items():
        overview.add_row(key, _duration(value) if key == "duration_s" else _fmt(value))
    for key in ("early_stopped", "initialized_from"):
        if state.get(key):
            overview.add_row(key, str(state[key]))
    console.print(overview)
    rows = run.metrics()
    if rows:
        history = Table(title="Evaluations")
        history.add_column("step", justify="right")
        for name in COMPARED_METRICS:
            history.add_column(name, justify="right")
        for row in rows:
            best = " *" if row.get("step") == summary.best_step else ""
            history.add_row(
                f"{row.get('step')}{best}",
                *(_fmt(row.get("metrics", {}).get(n)) for n in COMPARED_METRICS),
            )
        console.print(history)


def print_comparison(console: Console, runs: list[RunDir]) -> None:
    summaries = [summarize(r) for r in runs]
    differences = setting_differences(runs)
    settings = Table(title="Settings that differ (after resolving presets)")
    settings.add_column("setting")
    for r in runs:
        settings.add_column(r.name, justify="right")
    for key, values in differences.items():
        settings.add_row(key, *(_fmt(v, 4) for v in values))
    if not differences:
        settings.add_row("(none)", *("" for _ in runs))
    console.print(settings)
    metrics = Table(title="Best evaluation of each run")
    metrics.add_column("metric")
    for r in runs:
        metrics.add_column(r.name, justify="right")
    best_rows = [
        next((m for m in r.metrics() if m.get("step") == s.best_step), {})
        for r, s in zip(runs, summaries, strict=True)
    ]
    for name in COMPARED_METRICS:
        metrics.add_row(name, *(_fmt(row.get("metrics", {}).get(name)) for row in best_rows))
    metrics.add_row("at step", *(_fmt(s.best_step) for s in summaries))
    metrics.add_row("final loss", *(_fmt(s.final_loss) for s in summaries))
    console.print(metrics)
    for line in comparison_sentences(runs):
        console.print(line)


def comparison_sentences(runs: list[RunDir]) -> list[str]:
    """One line per later run against the first, e.g. 'plan.batch_size 24 -> 48: AP 0.370 -> 0.320'."""
    summaries = [summarize(r) for r in runs]
    first, lines = summaries[0], []
    for run, summary in zip(runs[1:], summaries[1:], strict=True):
        pair = setting_differences([runs[0], run])
        named = [k for k in pair if k.startswith("plan.")] or list(pair)
        change = ", ".join(
            f"{k.removeprefix('plan.')} {_fmt(pair[k][0], 4)} -> {_fmt(pair[k][1], 4)}"
            for k in named[:3]
        )
        scores = ", ".join(
            f"{label} {_fmt(a)} -> {_fmt(b)}"
            for label, a, b in (
                ("AP", first.best_ap, summary.best_ap),
                ("AP50", first.best_ap50, summary.best_ap50),
            )
        )
        lines.append(f"{first.name} -> {summary.name}: {change or 'same settings'}: {scores}")
    return lines
