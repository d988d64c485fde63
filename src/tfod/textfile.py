"""Reading the small text files users hand tfod (label maps, tfod.yaml, pipeline.config).

Such a file is a few kilobytes; anything else is the wrong file, and reading it blindly can hang
(a FIFO), exhaust memory (`/dev/zero`, a log file) or fail deep inside a parser. So the file must
be a regular file below a size ceiling, and UTF-8; each refusal is one line naming the file.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tfod.errors import TfodError

MAX_BYTES = 8 << 20  # 8 MB: a thousand times the largest real label map or pipeline.config


def read_text(path: Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of `path`, a `what` (e.g. "label map").

    Raises:
        TfodError: missing or unreadable, not a regular file, over `max_bytes`, or not UTF-8
            (the first bad byte's offset named).
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "folder" if stat.S_ISDIR(info.st_mode) else "device, pipe or socket"
            raise TfodError(f"the {what} must be a regular file, not a {kind}", path)
        if info.st_size > max_bytes:
            raise TfodError(
                f"the {what} is {info.st_size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} "
                "MB such a file can be: is it the right file?",
                path,
            )
        data = path.read_bytes()
    except OSError as err:
        raise TfodError(f"cannot read the {what}: {err.strerror or err}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TfodError(
            f"the {what} is not UTF-8 text: byte {err.start} is {data[err.start : err.start + 1]!r}",
            path,
        ) from None
