"""The one user-facing error type.

A `TfodError` is a problem the user can fix: a bad path, a broken annotation file, an impossible
setting. Its message names the file or field and says what to do. The CLI prints it without a
traceback and exits with status 1; anything else that escapes is a bug in tfod.
"""

from __future__ import annotations

from pathlib import Path


def describe(err: BaseException) -> str:
    """The first line of what `err` says (TensorFlow's errors keep it in `.message`)."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return str(text).splitlines()[0]


def last_error(output: str, fallback: str) -> str:
    """The line of a child process's output that says what went wrong: its last line naming an
    error, else its last line, else `fallback`."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [fallback])[-1][:300]


class TfodError(Exception):
    """A problem with the user's input or environment, explained in plain words.

    Args:
        message: what is wrong and how to fix it.
        path: the file or directory concerned, if any; printed before the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
