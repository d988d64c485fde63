"""Advisory locks: one holder of a file at a time, released by the kernel however the holder dies.

A lock is an `flock` on a small file that records its holder (pid, host, since when), so a
process that finds it taken can name who holds it. A lock is never stale: a killed holder's
lock is gone with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path


@contextlib.contextmanager
def hold(path: Path, busy: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock `path` for the `with` block.

    Args:
        path: the lock file (created, with its folder, if missing).
        busy: called with the holder's description when another process holds the lock. It
            either raises (refuse) or returns, and then `hold` waits for the lock; Ctrl-C and
            SIGTERM still end the wait.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy(os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown")
            fcntl.flock(fd, fcntl.LOCK_EX)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {since}\n".encode(), 0
        )
        yield
    finally:
        os.close(fd)  # releases the lock
