"""The zoo against a server and a cache that misbehave on purpose: resumes answered wrongly,
partials longer than the file, two fetches at once, archive bombs, a checkpoint missing its data,
hand-edited manifests, redirects, Ctrl-C. For each: one clear message or the right file, and a
cache with nothing half-written, wrong or oversized in it.

The archives are small checkpoints written here by `tf.train.Checkpoint` (what is checked is the
download and the cache, not the model); bombs are streamed, never written unpacked.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.helpers import run_tfod
from tests.zoo.server import ZooServer, serve
from tfod.errors import TfodError
from tfod.zoo import archive, cache, download
from tfod.zoo.cache import cache_dir, cache_folder, fetch

GOOD = "/m/good.tar.gz"


def _checkpoint_archive(
    path: Path, parts: tuple[str, ...] = ("index", "data-00000-of-00001")
) -> bytes:
    """A .tar.gz laid out like Model Garden's: model/ckpt-7.{index,data-*} and a state file."""
    import numpy as np
    import tensorflow as tf

    weights = np.random.default_rng(0).normal(size=(300, 300)).astype("float32")  # ~360 kB
    prefix = tf.train.Checkpoint(w=tf.Variable(weights)).write(str(path / "ckpt-7"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for part in parts:
            tar.add(f"{prefix}.{part}", f"model/ckpt-7.{part}")
        state = b'model_checkpoint_path: "ckpt-7"\n'
        info = tarfile.TarInfo("model/checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bucket")
    (root / "m").mkdir()
    (root / "m" / "good.tar.gz").write_bytes(_checkpoint_archive(tmp_path_factory.mktemp("ckpt")))
    (root / "m" / "index-only.tar.gz").write_bytes(
        _checkpoint_archive(tmp_path_factory.mktemp("ckpt"), parts=("index",))
    )
    return root


@pytest.fixture
def server(bucket: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZooServer]:
    state, httpd = serve(bucket)
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TFOD_ZOO_MIRROR", raising=False)
    yield state
    httpd.shutdown()


def _cache_holds_no_entry() -> bool:
    zoo = cache_dir() / "zoo"
    return not zoo.exists() or not any(zoo.iterdir())


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _partial(url: str) -> Path:
    key = cache_folder(url).name
    return cache_dir() / "downloads" / key / (Path(url).name + ".partial")


# --- resuming: the server's answer must continue the partial -----------------------------------
def test_a_206_that_does_not_continue_the_partial_restarts_from_zero(
    server: ZooServer, bucket: Path
) -> None:
    data = (bucket / GOOD.lstrip("/")).read_bytes()

    def whole_file_as_206(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(206)  # claims a range, sends everything from byte 0
        handler.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    url = server.url + GOOD
    partial = _partial(url)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:100_000])
    server.routes[GOOD] = whole_file_as_206
    got = fetch(url, progress=False)
    assert got.manifest["bytes"] == len(data), "the whole file was appended to the partial"
    assert server.requests[-1] == (GOOD, None), "it did not start again from zero"


def test_a_partial_longer_than_the_file_is_discarded_not_promoted(
    server: ZooServer, bucket: Path
) -> None:
    data = (bucket / GOOD.lstrip("/")).read_bytes()
    url = server.url + GOOD
    partial = _partial(url)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data + b"x" * 5000)  # the server answers 416 to its range
    got = fetch(url, progress=False)
    assert got.manifest["bytes"] == len(data)
    assert [r for _, r in server.requests] == [f"bytes={len(data) + 5000}-", None]


def test_a_206_with_a_lying_total_is_not_appended(server: ZooServer, bucket: Path) -> None:
    data = (bucket / GOOD.lstrip("/")).read_bytes()

    def wrong_total(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Range"):
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes 1000-{len(data) - 1}/{len(data) + 99}")
            handler.end_headers()
            handler.wfile.write(data[1000:])
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    url = server.url + GOOD
    _partial(url).parent.mkdir(parents=True)
    _partial(url).write_bytes(data[:1000])
    server.routes[GOOD] = wrong_total
    assert fetch(url, progress=False).manifest["bytes"] == len(data)


def test_a_body_shorter_than_announced_is_kept_to_resume_not_promoted(server: ZooServer) -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "5000")
        handler.end_headers()
        handler.wfile.write(b"x" * 1000)

    server.routes["/m/short.tar.gz"] = short
    url = server.url + "/m/short.tar.gz"
    with pytest.raises(TfodError, match=r"(ended at 1000 of 5000 bytes|interrupted).*resume"):
        fetch(url, progress=False)
    assert _partial(url).stat().st_size == 1000 and _cache_holds_no_entry()


# --- one fetch of an entry at a time -----------------------------------------------------------
def test_two_fetches_of_one_entry_at_once_download_it_once(
    server: ZooServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.delay = 0.05  # a few seconds: the second fetch starts while the first downloads
    url = server.url + GOOD
    results: list[object] = []

    def get() -> None:
        try:
            results.append(fetch(url, progress=False).manifest["sha256"])
        except Exception as err:  # reported by the assertion below
            results.append(err)

    first = threading.Thread(target=get)
    first.start()
    while not _partial(url).is_file():
        time.sleep(0.05)
    second = threading.Thread(target=get)
    second.start()
    first.join(120)
    second.join(120)
    assert len(results) == 2 and results[0] == results[1], results
    assert [p for p, _ in server.requests] == [GOOD], "the entry was downloaded twice"
    assert "Waiting for another tfod process (pid" in capsys.readouterr().err


# --- archives that would harm the machine ------------------------------------------------------
class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(path: Path, members: int, size: int) -> Path:
    """A .tar.gz of `members` files of `size` zero bytes, streamed (never unpacked here)."""
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"bomb/{i}")
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros(size)) if size else None)
    return path


@pytest.fixture(scope="module")
def bombs(bucket: Path) -> dict[str, str]:
    return {
        "gzip": _bomb(bucket / "m" / "gzip-bomb.tar.gz", 1, 256 << 20).name,  # 256 MiB in ~250 kB
        "many": _bomb(bucket / "m" / "many-1mb.tar.gz", 64, 1 << 20).name,  # each small, 64 MiB
        "inodes": _bomb(bucket / "m" / "inode-bomb.tar.gz", 20_000, 0).name,
    }


@pytest.mark.parametrize(
    ("bomb", "message"),
    [
        ("gzip", r"unpacks to more than \d+ bytes \(TFOD_ZOO_MAX_RATIO=50\)"),
        ("many", r"unpacks to more than \d+ bytes \(TFOD_ZOO_MAX_RATIO=50\)"),
        ("inodes", r"more than 1000 members \(TFOD_ZOO_MAX_FILES\)"),
    ],
)
def test_an_archive_bomb_is_refused_before_it_fills_the_disk(
    server: ZooServer, bombs: dict[str, str], bomb: str, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(TfodError, match=message + ".*the download was deleted"):
        fetch(f"{server.url}/m/{bombs[bomb]}", progress=False)
    assert time.monotonic() - started < 60
    assert _cache_holds_no_entry() and _bytes_under(cache_dir()) < 2 << 20


def test_the_limits_are_settings_and_a_known_size_is_a_limit(
    server: ZooServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url + GOOD
    monkeypatch.setenv("TFOD_ZOO_MAX_BYTES", "1000")
    with pytest.raises(TfodError, match=r"more than 1000 bytes \(TFOD_ZOO_MAX_BYTES=1000\)"):
        fetch(url, progress=False)
    monkeypatch.setenv("TFOD_ZOO_MAX_BYTES", "lots")
    with pytest.raises(TfodError, match=r"\$TFOD_ZOO_MAX_BYTES: must be a positive number"):
        fetch(url, progress=False)
    monkeypatch.delenv("TFOD_ZOO_MAX_BYTES")
    limits = archive.Limits.from_env(expected_bytes=2000)
    assert limits.ceiling(10**6) == (2200, "the catalog's unpacked size")


def test_an_archive_larger_than_the_free_space_is_refused(
    server: ZooServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        archive.shutil, "disk_usage", lambda _: usage(1 << 30, 0, archive.RESERVE + 100_000)
    )
    with pytest.raises(TfodError, match=r"has 269 MB free \(tfod keeps 268 MB free\)"):
        fetch(server.url + GOOD, progress=False)
    assert _cache_holds_no_entry()


# --- a checkpoint that does not read back is never cached --------------------------------------
def test_an_archive_without_its_data_file_is_not_cached(server: ZooServer) -> None:
    url = server.url + "/m/index-only.tar.gz"
    with pytest.raises(TfodError, match="the download is damaged: its checkpoint ckpt-7 does not"):
        fetch(url, progress=False)
    assert _cache_holds_no_entry()


# --- hand-edited or damaged cache entries ------------------------------------------------------
def _edit(manifest: dict, case: str) -> object:
    if case == "a list":
        return [manifest]
    if case == "no files":
        return {k: v for k, v in manifest.items() if k != "files"}
    if case == "files as a list":
        return {**manifest, "files": list(manifest["files"])}
    if case == "empty files":
        return {**manifest, "files": {}}
    if case == "no checkpoint":
        return {k: v for k, v in manifest.items() if k != "checkpoint"}
    if case == "checkpoint outside":
        return {**manifest, "checkpoint": "../../elsewhere/ckpt-6"}
    if case == "file outside":
        return {**manifest, "files": {**manifest["files"], "../../etc/passwd": "0" * 64}}
    if case == "bytes as text":
        return {**manifest, "bytes": "abc"}
    if case == "a file dropped from the list":
        return {**manifest, "files": dict(list(manifest["files"].items())[1:])}
    raise AssertionError(case)


MANIFEST_CASES = [
    "a list", "no files", "files as a list", "empty files", "no checkpoint", "checkpoint outside",
    "file outside", "bytes as text", "a file dropped from the list",
]  # fmt: skip


@pytest.mark.parametrize("case", MANIFEST_CASES)
def test_a_hand_edited_manifest_is_a_damaged_entry_that_force_fetches_again(
    server: ZooServer, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url + GOOD
    folder = fetch(url, progress=False).prefix.parent.parent
    path = folder / cache.MANIFEST
    path.write_text(json.dumps(_edit(json.loads(path.read_text()), case)))

    code, output = run_tfod(["zoo", "get", url], capsys)
    assert code == 1 and "Traceback" not in output
    assert "damaged cache entry" in output and f"tfod zoo get --force {url}" in output, output
    code, output = run_tfod(["zoo", "list"], capsys)
    assert code == 0, output
    code, output = run_tfod(["zoo", "get", "--force", url], capsys)
    assert code == 0, output
    assert fetch(url, progress=False).manifest["files"]  # whole again


def test_a_damaged_entry_is_listed_as_damaged(
    server: ZooServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TFOD_ZOO_MIRROR", server.url)
    name = "retinanet-mobilenetv2-256-coco"
    folder = cache_folder(f"zoo:{name}")
    folder.mkdir(parents=True)
    (folder / cache.MANIFEST).write_text(json.dumps({"files": "x", "bytes": "abc"}))
    code, output = run_tfod(["zoo", "list"], capsys)
    assert code == 0 and "Traceback" not in output, output
    assert "damaged" in output and f"tfod zoo get --force {name}" in output, output


def test_a_changed_file_marks_the_entry_damaged(server: ZooServer) -> None:
    got = fetch(server.url + GOOD, progress=False)
    Path(f"{got.prefix}.data-00000-of-00001").write_bytes(b"truncated")
    with pytest.raises(TfodError, match="changed since it was downloaded"):
        fetch(server.url + GOOD, progress=False)
    assert (got.prefix.parent.parent / cache.DAMAGED).is_file()
    with pytest.raises(TfodError, match=r"damaged cache entry.*--force"):
        cache.read_manifest(server.url + GOOD)


def test_a_checkpoint_that_fails_to_read_in_training_blames_the_download(
    server: ZooServer,
) -> None:
    from tfod.train import finetune

    got = fetch(server.url + GOOD, progress=False)
    Path(f"{got.prefix}.index").write_bytes(b"not an index")
    with pytest.raises(TfodError, match=r"damaged \(not the preset's fault\).*--force") as info:
        finetune.plan_restore(str(got.prefix), ["backbone"], None)
    assert "does not fit this preset" not in str(info.value)
    assert (got.prefix.parent.parent / cache.DAMAGED).is_file()


# --- redirects ---------------------------------------------------------------------------------
def _redirect_to(location: str) -> object:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.end_headers()

    return answer


def test_redirects_to_other_schemes_and_loops_are_one_line(server: ZooServer) -> None:
    server.routes["/m/ftp.tar.gz"] = _redirect_to("ftp://127.0.0.1/x.tar.gz")
    server.routes["/m/loop.tar.gz"] = _redirect_to(server.url + "/m/loop.tar.gz")
    with pytest.raises(TfodError, match="refused a redirect to ftp://") as info:
        fetch(server.url + "/m/ftp.tar.gz", progress=False)
    with pytest.raises(TfodError, match="too many redirects") as info:
        fetch(server.url + "/m/loop.tar.gz", progress=False)
    assert "\n" not in str(info.value)
    assert _cache_holds_no_entry()


def test_https_to_http_is_refused() -> None:
    import urllib.request

    request = urllib.request.Request("https://example.org/a.tar.gz")
    with pytest.raises(TfodError, match="from https to plain http"):
        download._Redirects().redirect_request(
            request, io.BytesIO(), 302, "Found", {}, "http://example.org/a.tar.gz"
        )


def test_a_cross_host_redirect_is_followed_said_and_recorded(
    server: ZooServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = server.url.rsplit(":", 1)[1]
    final = f"http://localhost:{port}{GOOD}"
    server.routes["/m/moved.tar.gz"] = _redirect_to(final)
    got = fetch(server.url + "/m/moved.tar.gz", progress=False)
    assert got.manifest["fetched_from"] == [final]
    assert got.manifest["url"] == server.url + "/m/moved.tar.gz"
    assert f"Redirected to localhost ({final})" in capsys.readouterr().err


# --- Ctrl-C and leftovers ----------------------------------------------------------------------
def test_ctrl_c_during_a_download_says_how_to_resume(server: ZooServer) -> None:
    server.delay = 1.0
    url = server.url + GOOD
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfod", "zoo", "get", url],
        env={**os.environ, "TFOD_CACHE": str(cache_dir())},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (_partial(url).is_file() and _partial(url).stat().st_size > 0):
        assert time.monotonic() < deadline and proc.poll() is None, "the download did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted: good.tar.gz:" in output and "run the same command to resume" in output
    assert "Traceback" not in output and _cache_holds_no_entry()


def test_a_failed_fetch_leaves_no_empty_folders(server: ZooServer) -> None:
    with pytest.raises(TfodError, match="HTTP 404"):
        fetch(server.url + "/m/missing.tar.gz", progress=False)
    assert not (cache_dir() / "downloads").exists()


def test_a_mirror_folder_that_is_not_there_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TFOD_ZOO_MIRROR", str(tmp_path / "absent"))
    with pytest.raises(
        TfodError, match=r"TFOD_ZOO_MIRROR names no folder here.*TFOD_ZOO_MIRROR_DIR"
    ):
        fetch("zoo:retinanet-mobilenetv2-256-coco", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TFOD_ZOO_MIRROR", str(empty))
    with pytest.raises(TfodError, match=f"the mirror TFOD_ZOO_MIRROR={empty} must hold tf_model"):
        fetch("zoo:retinanet-mobilenetv2-256-coco", progress=False)
