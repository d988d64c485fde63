"""Downloading, checking and caching published checkpoints.

`fetch("zoo:NAME")` or `fetch("https://.../x.tar.gz")` (or the URL of a checkpoint prefix) gives a
local checkpoint prefix. Layout under the cache folder ($TFOD_CACHE, default ~/.cache/tfod):

    downloads/KEY/FILE.partial   an interrupted download; the next fetch resumes it (HTTP Range)
    zoo/KEY/                     the extracted checkpoint and manifest.json (url, bytes, sha256,
                                 date, the checkpoint prefix, every file's sha256)

`zoo/KEY/` appears only complete (built in a temporary folder and renamed), so a killed fetch
never leaves something that looks usable. A cached entry makes no network call at all; every use
re-hashes its files against the manifest. $TFOD_ZOO_MIRROR (a URL or a local folder holding the
same relative paths, e.g. `tf_model_garden/vision/...`) serves hosts without internet, and CI.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.console import console
from tfod.errors import TfodError
from tfod.runs.rundir import now
from tfod.zoo.catalog import get_entry, https

CACHE_ENV = "TFOD_CACHE"
MIRROR_ENV = "TFOD_ZOO_MIRROR"
MANIFEST = "manifest.json"
CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tfod")


def is_remote(reference: str) -> bool:
    """Is `reference` a zoo name or a URL (not a local path)?"""
    return reference.startswith(("zoo:", "https://", "http://", "gs://"))


@dataclass(frozen=True)
class Cached:
    """A checkpoint in the cache."""

    reference: str
    prefix: Path
    manifest: dict[str, Any]


def _target(reference: str) -> tuple[str, str, str, str | None]:
    """(cache key, https URL, kind, pinned sha256) of a zoo name or URL."""
    if reference.startswith("zoo:"):
        entry = get_entry(reference[len("zoo:") :])
        return entry.name, entry.https_url, entry.kind, entry.sha256
    url = https(reference)
    kind = "tar.gz" if url.endswith((".tar.gz", ".tgz")) else "prefix"
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:16], url, kind, None


def cache_folder(reference: str) -> Path:
    """Where `reference` is (or would be) cached; its manifest.json exists once it is complete."""
    return cache_dir() / "zoo" / _target(reference)[0]


def read_manifest(reference: str) -> dict[str, Any] | None:
    """The cache manifest of `reference` as recorded (None: not cached), files not re-checked."""
    folder = cache_folder(reference)
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise TfodError(
            f"cannot read the cache manifest ({err}); remove the folder", folder
        ) from err
    return manifest


def cached(reference: str) -> Cached | None:
    """The cached, verified checkpoint of `reference`, or None if it is not in the cache."""
    folder = cache_folder(reference)
    manifest = read_manifest(reference)
    if manifest is None:
        return None
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise TfodError(
                f"cached file {name} is missing or changed since it was downloaded (sha256 "
                f"differs); remove {folder} and fetch it again (`tfod zoo get`)",
                folder,
            )
    return Cached(reference, folder / str(manifest["checkpoint"]), manifest)


def fetch(reference: str, progress: bool = True) -> Cached:
    """The checkpoint of a zoo name (`zoo:NAME`) or URL, downloaded and extracted if not cached.

    Raises:
        TfodError: unknown name, HTTP error, unreachable host, corrupt or truncated archive,
            wrong sha256, an archive without a checkpoint, a full disk: each names the URL or file
            and leaves no partial entry in the cache (an interrupted download is kept to resume).
    """
    found = cached(reference)
    if found is not None:
        return found
    key, url, kind, pinned = _target(reference)
    downloads = cache_dir() / "downloads" / key
    base = Path(urllib.parse.urlparse(url).path).name
    suffixes = [""] if kind == "tar.gz" else [".index", ".data-00000-of-00001"]
    files = [_download(url + suffix, downloads / (base + suffix), progress) for suffix in suffixes]
    digest = _sha256(files[-1])
    if pinned is not None and digest != pinned:
        shutil.rmtree(downloads, ignore_errors=True)
        raise TfodError(
            f"sha256 mismatch: expected {pinned}, got {digest}; the download was deleted. A "
            "mirror or proxy may serve another file: check the URL and fetch again",
            url,
        )
    folder = cache_folder(reference)
    with atomic.atomic_directory(folder) as tmp:
        if kind == "tar.gz":
            _extract(files[0], tmp, url)
        else:
            for path in files:
                shutil.copy2(path, tmp / path.name)
        prefix = _checkpoint_prefix(tmp, url)
        manifest: dict[str, Any] = {
            "reference": reference,
            "url": url,
            "bytes": sum(p.stat().st_size for p in files),
            "sha256": digest,
            "date": now(),
            "checkpoint": str(prefix.relative_to(tmp)),
            "files": {
                str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            },
        }
        atomic.write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(downloads, ignore_errors=True)
    return Cached(reference, folder / manifest["checkpoint"], manifest)


def _source(url: str) -> str:
    """Where to fetch `url` from: itself, or the same relative path under $TFOD_ZOO_MIRROR."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    relative = urllib.parse.urlparse(url).path.lstrip("/")
    if "://" not in mirror:
        return (Path(mirror) / relative).resolve().as_uri()
    return mirror.rstrip("/") + "/" + relative


def _download(url: str, dest: Path, progress: bool) -> Path:
    """Fetch `url` into `dest`, resuming `dest.partial` left by an interrupted download."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    source = _source(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have and source.startswith("http") else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(source, headers=headers), timeout=60
        )
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already whole
            partial.replace(dest)
            return dest
        raise TfodError(f"download failed: HTTP {err.code} {err.reason}", source) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise TfodError(
            f"cannot download ({reason}); on a host without internet, copy the file and set "
            f"{MIRROR_ENV} to the folder holding it under the same relative path",
            source,
        ) from None
    with response:
        if have and getattr(response, "status", 200) != 206:
            have = 0  # the server ignored the range: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        columns = (
            TextColumn("[bold]download"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("eta"), TimeRemainingColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task(dest.name, total=total, completed=have)
            if have:
                console.print(f"Resuming {dest.name} at {have / 1e6:.1f} MB")
            with partial.open("ab" if have else "wb") as out:
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.advance(task, len(chunk))
                except (http.client.HTTPException, TimeoutError, ConnectionError) as err:
                    raise TfodError(
                        f"download interrupted ({type(err).__name__}) after "
                        f"{out.tell() / 1e6:.1f} MB; run the same command to resume it",
                        source,
                    ) from None
    if total is not None and partial.stat().st_size != total:
        raise TfodError(
            f"download ended early ({partial.stat().st_size} of {total} bytes); run the same "
            "command to resume it",
            source,
        )
    partial.replace(dest)
    return dest


def _extract(archive: Path, out: Path, url: str) -> None:
    """Extract regular files and folders only; a member that is a link, a device or a path
    leaving the folder makes the archive unsafe (Python < 3.11.4, Debian 12's, has no
    extraction filter, so this is checked here)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                name = Path(member.name)
                if (
                    name.is_absolute()
                    or ".." in name.parts
                    or not (member.isfile() or member.isdir())
                ):
                    archive.unlink(missing_ok=True)
                    raise TfodError(
                        f"unsafe archive member {member.name!r} (a link, a device or a path "
                        "leaving the folder); the download was deleted",
                        url,
                    )
            # Checked above; Python >= 3.11.4 also applies its own "data" filter.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(out, members=members, **safe)  # type: ignore[arg-type]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        archive.unlink(missing_ok=True)
        raise TfodError(
            f"not a readable .tar.gz ({err}); the download was deleted: fetch it again", url
        ) from None


def _checkpoint_prefix(folder: Path, url: str) -> Path:
    """The newest checkpoint prefix (ckpt-N) in an extracted folder."""
    indexes = sorted(folder.rglob("*.index"))
    if not indexes:
        raise TfodError("holds no TensorFlow checkpoint (no *.index file)", url)

    def step(index: Path) -> int:
        tail = index.stem.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    newest = max(indexes, key=step)
    return newest.with_suffix("")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
