"""Downloading, checking and caching published checkpoints.

`fetch("zoo:NAME")` or `fetch("https://.../x.tar.gz")` (or the URL of a checkpoint prefix) gives a
local checkpoint prefix. Layout under the cache folder ($TFOD_CACHE, default ~/.cache/tfod):

    downloads/KEY/FILE.partial   an interrupted download; the next fetch resumes it (HTTP Range)
    published/KEY/FILE           the file(s) as published, once fetched (what `zoo pack` copies)
    zoo/KEY/                     the extracted (Keras weights: converted) checkpoint and
                                 manifest.json (url, the URL it was fetched from, bytes, sha256,
                                 date, the checkpoint prefix, every file's sha256); DAMAGED
                                 beside it once a use found it damaged
    locks/KEY.lock               held while KEY is fetched: a second fetch of it waits
    sha256/KEY.json              the sha256 of the first bytes fetched for KEY: every later
                                 fetch, from any source, must give the same (a catalog pin wins)

`zoo/KEY/` appears only complete (built in a temporary folder and renamed) and only once its
checkpoint reads back whole, so a killed or damaged fetch never leaves something that looks
usable. A cached entry makes no network call at all; every use re-checks its manifest and
re-hashes its files. A damaged entry is named with the way out (`tfod zoo get --force NAME`).
A catalog entry's sources are tried in order, the publisher's first, each failure said in one
line; $TFOD_ZOO_MIRROR (a URL or a local folder holding the same relative paths, e.g.
`tf_model_garden/vision/...`, as `tfod zoo pack` writes) replaces them: hosts without internet,
a team's own copy, CI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rich.markup import escape

from tfod import atomic, lockfile
from tfod.console import console
from tfod.errors import TfodError, describe
from tfod.runs.rundir import now
from tfod.zoo.archive import Limits, extract
from tfod.zoo.catalog import ZOO, get_entry, https, suffixes
from tfod.zoo.download import AccessDenied, fetch_file

CACHE_ENV = "TFOD_CACHE"
MIRROR_ENV = "TFOD_ZOO_MIRROR"
MANIFEST = "manifest.json"
DAMAGED = "DAMAGED"
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


@dataclass(frozen=True)
class _Target:
    key: str  # the cache folder's name
    url: str  # the publisher's https URL; its path is where a mirror holds the file
    sources: tuple[str, ...]  # every URL serving the file, tried in order (`url` first)
    kind: str  # "tar.gz", "prefix" or "keras-h5"
    sha256: str | None  # pinned by the catalog
    unpacked_bytes: int | None  # known by the catalog
    keras: tuple[str, float] | None = None  # the network a "keras-h5" file holds


def _target(reference: str) -> _Target:
    if reference.startswith("zoo:"):
        entry = get_entry(reference[len("zoo:") :])
        return _Target(
            entry.name, entry.https_url, entry.sources, entry.kind, entry.sha256,
            entry.unpacked_bytes, entry.keras,
        )  # fmt: skip
    url = https(reference)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise TfodError("only zoo:NAME, https://, http:// and gs:// checkpoints are fetched", url)
    kind = "tar.gz" if url.endswith((".tar.gz", ".tgz")) else "prefix"
    key = "url-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return _Target(key, url, (url,), kind, None, None)


def cache_folder(reference: str) -> Path:
    """Where `reference` is (or would be) cached; its manifest.json exists once it is complete."""
    return cache_dir() / "zoo" / _target(reference).key


def _name(reference: str) -> str:
    """What the user types for `reference` after `tfod zoo get`."""
    return reference.removeprefix("zoo:")


def _damaged(reference: str, folder: Path, why: str) -> TfodError:
    return TfodError(
        f"damaged cache entry: {why}. Fetch it again with `tfod zoo get --force {_name(reference)}`",
        folder,
    )


def _mark_damaged(folder: Path, why: str) -> None:
    """Record that a use found the entry at `folder` damaged (shown by `tfod zoo list`)."""
    with contextlib.suppress(OSError):  # a read-only cache: the error message still says it
        atomic.write_text(folder / DAMAGED, why + "\n")


def read_manifest(reference: str) -> dict[str, Any] | None:
    """The cache manifest of `reference`, checked for form (None: not cached); files not hashed.

    Raises:
        TfodError: a damaged entry (marked so, or a manifest that is not what tfod writes).
    """
    folder = cache_folder(reference)
    marker = folder / DAMAGED
    if marker.is_file():
        raise _damaged(reference, folder, marker.read_text(errors="replace").strip()[:300])
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise _damaged(reference, folder, f"cannot read {MANIFEST} ({err})") from None
    problem = _manifest_problem(manifest, folder)
    if problem:
        raise _damaged(reference, folder, f"{MANIFEST} {problem}")
    result: dict[str, Any] = manifest
    return result


def _inside(folder: Path, name: str) -> bool:
    relative = PurePosixPath(name)
    return (
        bool(name)
        and not relative.is_absolute()
        and ".." not in relative.parts
        and (folder / relative).resolve().is_relative_to(folder.resolve())
    )


def _manifest_problem(manifest: object, folder: Path) -> str | None:
    """What makes `manifest` not one tfod wrote for `folder` (None: nothing)."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    for key in ("reference", "url", "sha256", "checkpoint", "date"):
        if not isinstance(manifest.get(key), str):
            return f"has no {key!r} text"
    fetched_from = manifest.get("fetched_from", [])
    if not isinstance(fetched_from, list) or not all(isinstance(u, str) for u in fetched_from):
        return "has a 'fetched_from' that is not a list of URLs"
    size = manifest.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "has no 'bytes' count"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "lists no files"
    return _files_problem(files, manifest["checkpoint"], folder)


def _files_problem(files: dict[Any, Any], checkpoint: str, folder: Path) -> str | None:
    """What is wrong with a manifest's `files` (name -> sha256) for its `checkpoint`."""
    for name, digest in files.items():
        if not _inside(folder, name):
            return f"names a file outside the entry ({name!r})"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"has no sha256 for {name!r}"
    if not _inside(folder, checkpoint) or f"{checkpoint}.index" not in files:
        return f"names a checkpoint ({checkpoint!r}) that is not among its files"
    if not any(name.startswith(f"{checkpoint}.data-") for name in files):
        return f"lists no data file of its checkpoint {checkpoint!r}"
    return None


def cached(reference: str) -> Cached | None:
    """The cached, verified checkpoint of `reference`, or None if it is not in the cache.

    Raises:
        TfodError: a damaged entry (now marked so): a file missing, changed or not in the
            manifest, or a manifest that is not what tfod writes.
    """
    manifest = read_manifest(reference)
    if manifest is None:
        return None
    folder = cache_folder(reference)
    listed = set(manifest["files"])
    present = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not p.is_dir() and p.name not in (MANIFEST, DAMAGED)
    }
    problem = None
    if listed - present:
        problem = f"{', '.join(sorted(listed - present))} is missing"
    elif present - listed:
        problem = f"{', '.join(sorted(present - listed))} is not in its manifest"
    else:
        for name, digest in manifest["files"].items():
            path = folder / name
            if path.is_symlink() or sha256_of(path) != digest:
                problem = f"{name} changed since it was downloaded (sha256 differs)"
                break
    if problem:
        _mark_damaged(folder, problem)
        raise _damaged(reference, folder, problem)
    return Cached(reference, folder / str(manifest["checkpoint"]), manifest)


def damaged_advice(checkpoint: str, why: str) -> str | None:
    """If `checkpoint` lies in the zoo cache: mark its entry damaged because of `why` and say how
    to fetch it again; else None (the checkpoint is the user's own)."""
    zoo = (cache_dir() / "zoo").resolve()
    path = Path(checkpoint).resolve()
    if not path.is_relative_to(zoo) or path == zoo:
        return None
    folder = zoo / path.relative_to(zoo).parts[0]
    try:
        reference = str(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["reference"])
    except (OSError, ValueError, KeyError, TypeError):
        reference = folder.name
    _mark_damaged(folder, why)
    return (
        f"the cached download of {reference} is damaged (not the preset's fault); fetch it "
        f"again with `tfod zoo get --force {_name(reference)}`"
    )


def fetch(
    reference: str,
    progress: bool = True,
    force: bool = False,
    source: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> Cached:
    """The checkpoint of a zoo name (`zoo:NAME`) or URL, downloaded and extracted if not cached.

    One process fetches an entry at a time; another one asking for it waits, then uses it.

    Args:
        force: fetch again even if cached (a damaged entry is replaced).
        source: a path or URL holding the published file(s) (`tfod zoo add`): fetched from there
            alone, whether cached or not, with every check a download gets; a cached entry is
            replaced only once the new one has passed them.
        check: called with the checkpoint prefix before anything is cached or recorded; a
            TfodError from it leaves the cache as it was.

    Raises:
        TfodError: unknown name, HTTP error, unreachable host, corrupt, truncated, unsafe or
            oversized archive, wrong sha256, a checkpoint that does not read back whole, a full
            disk, a damaged cache entry (without `force`): each names the URL or file and leaves
            no partial entry in the cache (an interrupted download is kept to resume).
    """
    target = _target(reference)
    force = force or source is not None
    if not force and (found := cached(reference)) is not None:
        return found
    sources = sources_of(target.url, target.sources) if source is None else [_given(source)]

    def wait(holder: str) -> None:
        console.print(f"Waiting for another tfod process ({holder}), which is fetching {reference}")

    with lockfile.hold(cache_dir() / "locks" / f"{target.key}.lock", wait):
        folder = cache_folder(reference)
        if force and source is None:
            atomic.remove_directory(folder)
        elif source is None and (found := cached(reference)) is not None:
            return found  # fetched by the process we waited for
        downloads = cache_dir() / "downloads" / target.key
        try:
            return _fetch(reference, target, sources, folder, downloads, progress, check)
        finally:
            for empty in (downloads, downloads.parent):
                if empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()


def _checked_digest(
    path: Path, expected: str | None, target: _Target, source: str, downloads: Path
) -> str:
    """`path`'s sha256, which must be `expected` when there is one (else the download goes)."""
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        shutil.rmtree(downloads, ignore_errors=True)
        raise TfodError(
            f"sha256 mismatch: expected {expected} ({_pinned_by(target)}), got {digest}; "
            "the download was deleted. This source serves another file than the one "
            "pinned: check the URL",
            source,
        )
    return digest


def _fetch(
    reference: str,
    target: _Target,
    sources: list[tuple[str, str]],
    folder: Path,
    downloads: Path,
    progress: bool,
    check: Callable[[Path], None] | None,
) -> Cached:
    base = Path(urllib.parse.urlsplit(target.url).path).name
    parts = suffixes(target.kind)
    expected = target.sha256 or _recorded(target.key)
    failures: list[TfodError] = []
    for source, hint in sources:
        files = [downloads / (base + suffix) for suffix in parts]
        try:
            fetched = [
                fetch_file(source + suffix, dest, progress, hint)
                for suffix, dest in zip(parts, files, strict=True)
            ]
            digest = _checked_digest(files[-1], expected, target, source, downloads)
        except TfodError as err:
            failures.append(err)
            if len(sources) > 1:
                console.print(f"[yellow]{escape(str(err))}[/yellow]", soft_wrap=True)
            continue
        if failures:
            console.print(f"{reference}: fetched from {source} (source {len(failures) + 1})")
        break
    else:
        raise _unfetched(reference, target, failures)
    with atomic.atomic_directory(folder) as tmp:
        if target.kind == "tar.gz":
            extract(files[0], tmp, target.url, Limits.from_env(target.unpacked_bytes))
        elif target.keras is not None:
            from tfod.zoo.keras_weights import convert

            convert(files[0], *target.keras, tmp)
        else:
            for path in files:
                shutil.copy2(path, tmp / path.name)
        prefix = _checkpoint_prefix(tmp, target.url)
        _check_readable(prefix, target.url)
        if check is not None:
            check(prefix)
        manifest: dict[str, Any] = {
            "reference": reference,
            "url": target.url,
            "fetched_from": fetched,
            "bytes": sum(p.stat().st_size for p in files),
            "sha256": digest,
            "date": now(),
            "checkpoint": str(prefix.relative_to(tmp)),
            "files": {
                str(p.relative_to(tmp)): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            },
        }
        atomic.write_json(tmp / MANIFEST, manifest)
    if expected is None:
        _record(target.key, digest, fetched[-1])
    kept = published_folder(target.key)
    atomic.remove_directory(kept)
    kept.parent.mkdir(parents=True, exist_ok=True)
    downloads.replace(kept)  # the files as published: what `tfod zoo pack` serves to others
    return Cached(reference, folder / manifest["checkpoint"], manifest)


def published_folder(key: str) -> Path:
    """Where the files of cache entry `key` are kept as they were published (archive or
    checkpoint files, byte for byte)."""
    return cache_dir() / "published" / key


def _record_path(key: str) -> Path:
    return cache_dir() / "sha256" / f"{key}.json"


def _recorded(key: str) -> str | None:
    """The sha256 of the first bytes fetched for `key`, which every later source must match (a
    forced fetch too); None before the first fetch."""
    try:
        digest = json.loads(_record_path(key).read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) and _SHA256.fullmatch(digest) else None


def _record(key: str, digest: str, source: str) -> None:
    with contextlib.suppress(OSError):  # a read-only cache keeps the catalog's rules only
        atomic.write_json(_record_path(key), {"sha256": digest, "source": source, "date": now()})


def _pinned_by(target: _Target) -> str:
    if target.sha256 is not None:
        return "pinned by the catalog"
    return (
        "recorded at the first fetch; if the publisher replaced the file on purpose, delete "
        f"{_record_path(target.key)}"
    )


def _unfetched(reference: str, target: _Target, failures: list[TfodError]) -> TfodError:
    """One error for a file that no source gave: each source's failure on a line of its own, and
    the ways out when a publisher refuses access."""
    if len(failures) == 1:
        message, path = failures[0].message, failures[0].path
    else:
        lines = "\n".join(f"  {err}" for err in failures)
        message, path = f"no source gave it ({len(failures)} tried):\n{lines}", reference
    if any(isinstance(err, AccessDenied) for err in failures):
        relative = urllib.parse.urlsplit(target.url).path.lstrip("/")
        message += (
            f"\nWays out: a mirror holding {relative} ({MIRROR_ENV}=FOLDER or URL; "
            f"`tfod zoo pack {_name(reference)}` on a machine that has it cached writes one), "
            f"or an ImageNet backbone start from another publisher ({_other_publishers(target)})"
        )
    return TfodError(message, path)


def _given(source: str) -> tuple[str, str]:
    """A path or URL given for an entry's published file(s), as a source, with what to check."""
    url = source if "://" in source else Path(source).expanduser().resolve().as_uri()
    return url, "check the path or URL given: it must hold the file(s) as published"


def _other_publishers(target: _Target) -> str:
    """The backbone entries published in another bucket than `target`, as `tfod init` lines."""

    def bucket(url: str) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(url)
        return parts.netloc, parts.path.lstrip("/").split("/", 1)[0]

    names = [
        f"`tfod init --pretrained {entry.name}`"
        for entry in ZOO.values()
        if entry.restores == "backbone" and bucket(entry.https_url) != bucket(target.url)
    ]
    return ", ".join(names) or "the 'backbone' entries of `tfod zoo list`"


def sources_of(url: str, published: tuple[str, ...]) -> list[tuple[str, str]]:
    """Where to fetch the file published at `url` from, in order, each with what to do if it
    cannot be reached: $TFOD_ZOO_MIRROR alone when set (the same relative path), else the
    catalog's sources."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        hint = (
            f"on a host without internet, copy the file and set {MIRROR_ENV} to the folder (or "
            "URL) holding it under the same relative path"
        )
        return [(source, hint) for source in published]
    relative = urllib.parse.urlsplit(url).path.lstrip("/")
    hint = f"the mirror {MIRROR_ENV}={mirror} must hold {relative}"
    if "://" not in mirror:
        folder = Path(mirror)
        if not folder.is_dir():
            raise TfodError(
                f"{MIRROR_ENV} names no folder here (in a container: mount it, e.g. with "
                "TFOD_ZOO_MIRROR_DIR in compose)",
                mirror,
            )
        return [((folder / relative).resolve().as_uri(), hint)]
    return [(mirror.rstrip("/") + "/" + relative, hint)]


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


def _check_readable(prefix: Path, url: str) -> None:
    """Read every tensor of the checkpoint at `prefix`: its index and every data file it names
    must be there and whole."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError) as err:
        raise TfodError(
            f"the download is damaged: its checkpoint {prefix.name} does not read back "
            f"({describe(err).replace(str(prefix.parent) + '/', '')}); nothing was cached. If "
            "fetching it again does not help, the published file itself is incomplete",
            url,
        ) from None


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
