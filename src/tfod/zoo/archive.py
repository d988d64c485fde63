"""Unpacking a downloaded .tar.gz into the cache, refusing what could harm the machine.

Refused, with the cache left as it was: a member that is a link, a device or a path leaving the
folder; more members than `max_files` (an inode bomb); more unpacked bytes than `max_bytes`, or
than `max_ratio` times the archive (a gzip bomb), or than 1.1x an entry's known unpacked size;
a member that would leave less than `RESERVE` bytes free on the disk. Members are read one at a
time, so a refusal comes before the archive is read to its end, and nothing past a limit is
written. The limits are environment variables (see `Limits.from_env`).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

from tfod.errors import TfodError

RESERVE = 256 << 20  # bytes a download must leave free on the cache's disk
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """What one archive may unpack to.

    Args:
        max_bytes: unpacked bytes in all ($TFOD_ZOO_MAX_BYTES; default 8 GiB, far above any
            published detector checkpoint).
        max_ratio: unpacked bytes per archive byte ($TFOD_ZOO_MAX_RATIO; default 50: float
            weights barely compress, so a checkpoint archive unpacks to about 1.1x).
        max_files: members ($TFOD_ZOO_MAX_FILES; default 1000: a checkpoint has 3 or 4 files).
        expected_bytes: the entry's known unpacked size, if the catalog has it.
    """

    max_bytes: int = 8 * GiB
    max_ratio: float = 50.0
    max_files: int = 1000
    expected_bytes: int | None = None

    @classmethod
    def from_env(cls, expected_bytes: int | None = None) -> Limits:
        defaults = cls()
        return cls(
            max_bytes=int(_env_number("TFOD_ZOO_MAX_BYTES", defaults.max_bytes)),
            max_ratio=_env_number("TFOD_ZOO_MAX_RATIO", defaults.max_ratio),
            max_files=int(_env_number("TFOD_ZOO_MAX_FILES", defaults.max_files)),
            expected_bytes=expected_bytes,
        )

    def ceiling(self, archive_bytes: int) -> tuple[int, str]:
        """(unpacked bytes allowed, which limit that is) for an archive of `archive_bytes`."""
        options = [
            (self.max_bytes, f"TFOD_ZOO_MAX_BYTES={self.max_bytes}"),
            (int(self.max_ratio * archive_bytes), f"TFOD_ZOO_MAX_RATIO={self.max_ratio:g}"),
        ]
        if self.expected_bytes is not None:
            options.append((int(1.1 * self.expected_bytes), "the catalog's unpacked size"))
        return min(options)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise TfodError(f"must be a positive number, not {text!r}", f"${name}")
    return value


def extract(archive: Path, out: Path, url: str, limits: Limits) -> None:
    """Unpack the regular files and folders of `archive` into `out`, within `limits`.

    Raises:
        TfodError: unreadable, unsafe or over a limit; the archive is deleted (the caller's
            temporary `out` is removed with its contents).
    """
    ceiling, which = limits.ceiling(archive.stat().st_size)
    written = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_files:
                    _refuse(
                        archive, url, f"more than {limits.max_files} members (TFOD_ZOO_MAX_FILES)"
                    )
                target = out / _safe_name(member, archive, url)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                written += member.size
                if written > ceiling:
                    _refuse(
                        archive, url, f"unpacks to more than {ceiling} bytes ({which}); "
                        f"an archive of {archive.stat().st_size} bytes",
                    )  # fmt: skip
                free = shutil.disk_usage(out).free
                if member.size > free - RESERVE:
                    _refuse(
                        archive, url, f"{member.name} needs {member.size / 1e6:.0f} MB and "
                        f"{out.parent} has {free / 1e6:.0f} MB free (tfod keeps "
                        f"{RESERVE / 1e6:.0f} MB free)",
                    )  # fmt: skip
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file (checked by _safe_name)
                with source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        _refuse(archive, url, f"not a readable .tar.gz ({err})")


def _safe_name(member: tarfile.TarInfo, archive: Path, url: str) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        _refuse(
            archive, url, f"unsafe archive member {member.name!r} (a link, a device or a path "
            "leaving the folder)",
        )  # fmt: skip
    return name


def _refuse(archive: Path, url: str, why: str) -> NoReturn:
    archive.unlink(missing_ok=True)
    raise TfodError(f"{why}; the download was deleted", url)
