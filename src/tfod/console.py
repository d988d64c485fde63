"""The console tfod prints to (stderr, so stdout stays machine-readable) and its progress bars."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

# Without a terminal (`docker compose logs`, CI, a file) rich would cut tables at 80 columns
# ("+0.0…"): lay them out wide instead, unless COLUMNS says otherwise.
PLAIN_WIDTH = 200
console = Console(
    stderr=True,
    highlight=False,
    width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else PLAIN_WIDTH,
)


def live_display() -> bool:
    """Whether progress bars can redraw in place: on a terminal, or in Jupyter where rich draws
    them in a widget (with ipywidgets installed; without it rich only warns, so counted bars are
    off there). Elsewhere (`docker compose logs`, CI, a file) a bar is printed once, when done,
    and training prints a plain line now and then."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return console.is_terminal


def _progress() -> Progress:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    return Progress(
        *columns,
        console=console,
        transient=False,
        disable=not live_display() and console.is_jupyter,
    )


def _advance(progress: Progress, task: TaskID) -> None:
    speed = next(t.speed for t in progress.tasks if t.id == task)
    progress.update(task, advance=1, rate=f"{speed:.1f}/s" if speed else "")


def track(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items` while showing a progress bar with count, rate and time left."""
    if not enabled:
        yield from items
        return
    with _progress() as progress:
        task = progress.add_task(description, total=total, rate="")
        for item in items:
            yield item
            _advance(progress, task)


@contextlib.contextmanager
def counter() -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """Progress bars for work counted by callbacks: `start(description, total)` adds a bar and
    returns the function that advances it by one."""
    with _progress() as progress:

        def start(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total, rate="")
            return lambda: _advance(progress, task)

        yield start


@contextlib.contextmanager
def native_output_to(log_path: Path) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 (TensorFlow's C++ logs, absl, warnings)
    to `log_path`, while `console` keeps printing to the terminal.

    Model Garden and TensorFlow print hundreds of lines a user does not need (CUDA probing on CPU
    hosts, retracing notes, duplicated absl lines); the raw log stays in the run folder.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    previous = console._file  # None: follow sys.stderr, as before
    with log_path.open("ab") as log:
        try:
            console.file = terminal
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            console._file = previous
            terminal.close()


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log (TensorFlow's own explanation of a failure), or a note
    that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return f"(no log: {err.strerror or err})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"
