"""The zoo served from elsewhere: a team mirror packed from the local cache, and a check of which
sources answer.

A mirror holds each file under its publisher's path (`tf_model_garden/vision/...`), byte for byte
as published, so `TFOD_ZOO_MIRROR=FOLDER|URL` fetches from it with every check a fetch from the
publisher gets (the sha256 recorded at a first fetch, or the catalog's pin, still holds). Beside
the files: `SHA256SUMS` (`sha256sum -c SHA256SUMS` checks a copy) and `tfod-mirror.json` (which
entry each file belongs to).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.errors import TfodError
from tfod.runs.rundir import now
from tfod.zoo.cache import cached, published_folder, sha256_of, sources_of
from tfod.zoo.catalog import ZOO, ZooEntry, get_entry, suffixes
from tfod.zoo.download import TIMEOUT, is_access_denied, opener

SUMS = "SHA256SUMS"
INDEX = "tfod-mirror.json"


def _files(entry: ZooEntry) -> list[str]:
    """The mirror paths of an entry's published file(s)."""
    path = urllib.parse.urlsplit(entry.https_url).path.lstrip("/")
    return [path + suffix for suffix in suffixes(entry.kind)]


def pack(names: list[str], out: Path) -> dict[str, Any]:
    """Write a mirror of the cached entries `names` to `out`: a folder (files added beside what
    it holds), or a `.tar` file.

    Returns:
        The mirror's index (`tfod-mirror.json`).

    Raises:
        TfodError: an unknown or uncached entry (with the command that fetches it), a damaged
            one, or an entry cached before tfod kept published files.
    """
    chosen: list[tuple[ZooEntry, list[tuple[str, Path, str]]]] = []
    for name in dict.fromkeys(names):
        entry = get_entry(name)
        found = cached(f"zoo:{name}")  # re-hashes the checkpoint: a damaged entry is refused
        if found is None:
            raise TfodError(f"{name} is not cached here: `tfod zoo get {name}` first")
        kept = published_folder(entry.name)
        files = []
        for relative in _files(entry):
            path = kept / Path(relative).name
            if not path.is_file():
                raise TfodError(
                    f"{name} was cached without its published file(s) (an older tfod, or a cache "
                    f"entry copied by hand): `tfod zoo get --force {name}` fetches them again",
                    path,
                )
            files.append((relative, path, sha256_of(path)))
        if files[-1][2] != found.manifest["sha256"]:
            raise TfodError(
                f"the kept file of {name} is not what was fetched (sha256 differs); "
                f"`tfod zoo get --force {name}` fetches it again",
                files[-1][1],
            )
        chosen.append((entry, files))
    index = {
        "written": now(),
        "entries": {
            entry.name: {"url": entry.url, "files": {rel: digest for rel, _, digest in files}}
            for entry, files in chosen
        },
    }
    if out.suffix == ".tar":
        _write_tar(out, chosen, index)
    else:
        _write_folder(out, chosen, index)
    return index


def _sums(index: dict[str, Any]) -> str:
    return "".join(
        f"{digest}  {relative}\n"
        for entry in index["entries"].values()
        for relative, digest in entry["files"].items()
    )


def _write_folder(
    out: Path, chosen: list[tuple[ZooEntry, list[tuple[str, Path, str]]]], index: dict[str, Any]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for _, files in chosen:
        for relative, path, _digest in files:
            dest = out / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
            dest.chmod(0o644)  # served to others: readable by a web server or a container user
    earlier = _read_index(out)
    merged = {**index, "entries": {**earlier.get("entries", {}), **index["entries"]}}
    atomic.write_text(out / SUMS, _sums(merged))
    atomic.write_json(out / INDEX, merged)


def _read_index(out: Path) -> dict[str, Any]:
    try:
        earlier = json.loads((out / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier, dict) and isinstance(earlier.get("entries"), dict) else {}


def _write_tar(
    out: Path, chosen: list[tuple[ZooEntry, list[tuple[str, Path, str]]]], index: dict[str, Any]
) -> None:
    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out) as tmp, tarfile.open(tmp, "w") as tar:
        for _, files in chosen:
            for relative, path, _digest in files:
                info = tar.gettarinfo(str(path), relative)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
        add_bytes(tar, SUMS, _sums(index).encode())
        add_bytes(tar, INDEX, (json.dumps(index, indent=2) + "\n").encode())


@dataclass(frozen=True)
class Probe:
    """What one source said to a 1-byte request for each of an entry's files."""

    entry: str
    source: str
    status: str  # "ok", "HTTP 404", "AccessDenied", "unreachable (...)"
    size: int | None  # the file(s)' total size, when every file answered with one

    @property
    def reachable(self) -> bool:
        return self.status == "ok"


def check(names: list[str] | None = None) -> list[Probe]:
    """Ask every source of every entry (`names`: these only) for the first byte of each file,
    without downloading: a row per entry and source. With $TFOD_ZOO_MIRROR set, the mirror is
    asked (it is what a fetch would use)."""
    probes = []
    for name in names or list(ZOO):
        entry = get_entry(name)
        for source, _hint in sources_of(entry.https_url, entry.sources):
            status: str = "ok"
            total: int | None = 0
            for suffix in suffixes(entry.kind):
                status, size = _probe(source + suffix)
                if status != "ok":
                    break
                total = None if size is None or total is None else total + size
            probes.append(Probe(entry.name, source, status, total if status == "ok" else None))
    return probes


def _probe(url: str) -> tuple[str, int | None]:
    """("ok", size or None) when `url` would serve its first byte; else (what went wrong, None)."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        return ("ok", path.stat().st_size) if path.is_file() else ("missing", None)
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with opener().open(request, timeout=min(TIMEOUT, 20)) as response:
            span = response.headers.get("Content-Range", "")
            total = (
                span.rsplit("/", 1)[-1] if "/" in span else response.headers.get("Content-Length")
            )
            return "ok", int(total) if total and total.isdigit() else None
    except urllib.error.HTTPError as err:
        return ("AccessDenied" if is_access_denied(err) else f"HTTP {err.code}"), None
    except TfodError as err:  # a refused redirect
        return err.message, None
    except (urllib.error.URLError, OSError) as err:
        return f"unreachable ({getattr(err, 'reason', None) or err})", None
