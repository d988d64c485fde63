"""The training progress display: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tfod.console import console, live_display


class ProgressBar:
    """Step, steps/s, loss and ETA; silent when disabled.

    Where bars redraw (a terminal, Jupyter with ipywidgets), a live bar. Elsewhere (`docker compose
    logs`, CI, a file), a plain line every TFOD_PROGRESS_SECONDS (default 30) seconds and at the
    last step.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.plain = enabled and not live_display()
        self.every = float(os.environ.get("TFOD_PROGRESS_SECONDS", "30"))
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: Any = None
        self._started = 0.0
        self._first_step = 0
        self._printed = 0.0

    def __enter__(self) -> ProgressBar:
        if self.enabled and not self.plain:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and not self.plain:
            self._progress.stop()

    def start(self, step: int) -> None:
        self._first_step, self._started = step, time.monotonic()
        self._printed = self._started
        if self.plain:
            console.print(f"train: step {step}/{self.total}, tracing the graph...")
        elif self.enabled:
            self._task = self._progress.add_task(
                "train", total=self.total, completed=step, rate="tracing the graph...", loss="-"
            )

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        clock = time.monotonic()
        elapsed = clock - self._started
        rate = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        if not self.plain:
            self._progress.update(
                self._task, completed=step, rate=f"{rate:.2f} steps/s", loss=f"{loss:.3f}"
            )
            return
        if clock - self._printed < self.every and step < self.total:
            return
        self._printed = clock
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        console.print(
            f"train: step {step}/{self.total} ({100 * step / self.total:.0f}%), loss {loss:.3f}, "
            f"{rate:.2f} steps/s, elapsed {hms(elapsed)}, eta {hms(eta)}"
        )

    def log(self, message: str) -> None:
        (self._progress.console if self.enabled else console).print(message)


def hms(seconds: float) -> str:
    """H:MM:SS, or "-" for nan."""
    if seconds != seconds:  # nan: no rate yet
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
