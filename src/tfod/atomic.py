"""Atomic outputs: a killed process leaves either the old file or the new one, never half of one.

Everything tfod writes for another process to read (TFRecords, JSON, plots, checkpoints' side
files) goes through here: write to a temporary name in the same directory, flush, fsync, rename.

Temporary names carry the writer's host and pid (`.tfod-tmp-NAME@HOST@PID@RANDOM`), so the next
writer of the same output can prove that a leftover belongs to a process that was killed, and
remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tfod-tmp-"
_HOST = socket.gethostname()


def _tmp_prefix(name: str) -> str:
    return f"{TMP_PREFIX}{name}@{_HOST}@{os.getpid()}@"


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by tfod processes of this host that are dead.

    Returns:
        What was removed. A leftover of another host, or of a live process, is kept.
    """
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        fields = entry.name[len(TMP_PREFIX) :].rsplit("@", 3)
        if not entry.name.startswith(TMP_PREFIX) or len(fields) != 4:
            continue
        name, host, pid, _ = fields
        if name not in (path.name, path.name + ".old") or host != _HOST or not pid.isdigit():
            continue
        if alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the modes a plain open() or
# mkdir() would give, so a container running as another user can read a dataset or a run.
_FILE_MODE = 0o666 & ~_current_umask()
_DIR_MODE = 0o777 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    The temporary name ends with `path`'s suffix, for writers that pick a format by it (video).
    On an exception the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=_tmp_prefix(path.name), suffix=path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(_FILE_MODE)
    try:
        yield tmp
        _fsync(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` as a whole.

    An existing `path` is swapped out only after the new directory is complete, then removed.
    On an exception the temporary directory is removed and `path` is untouched. Temporaries of
    `path` left by killed processes are removed first, and said so.
    """
    from tfod.console import console

    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale(path):
        console.print(f"Removed {stale}, left by a tfod process that was killed.")
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name), dir=path.parent))
    tmp.chmod(_DIR_MODE)
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync(child)
        old = _set_aside(path)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_directory(path: Path) -> None:
    """Remove the folder `path` (if any) at once: it is renamed away first, so a process killed
    while deleting leaves a temporary that the next writer removes, never half of `path`."""
    old = _set_aside(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _set_aside(path: Path) -> Path | None:
    """Rename `path` (if it exists) to a temporary name beside it, and return that name."""
    if not path.exists():
        return None
    old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name + ".old"), dir=path.parent))
    old.rmdir()
    path.rename(old)
    return old


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
