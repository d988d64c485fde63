"""The zoo against a local server laid out like the real hosts, serving a tarball laid out like
Model Garden's (`mobilenetv2_ssd_i256_ckpt/ckpt-277200.{index,data-00000-of-00001}` and a
`checkpoint` file) made from a run the tests train with the matching preset."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import smoke_config
from tests.data.sources import WRITERS
from tests.helpers import readme_commands, run_tfod
from tests.zoo.server import ZooServer, serve
from tfod.errors import TfodError
from tfod.zoo import catalog
from tfod.zoo.cache import cache_dir, cache_folder, fetch

NAME = "retinanet-mobilenetv2-256-coco"
ENTRY = catalog.ZOO[NAME]
RELATIVE = ENTRY.url.removeprefix(catalog.GCS)  # tf_model_garden/vision/qat/.../..._ckpt.tar.gz


@pytest.fixture(scope="module")
def pretrained_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the published layout's preset, 2 steps: stands in for Model Garden's COCO run."""
    from tfod.train.trainer import train

    config = smoke_config(
        demo_data, name="coco", model={"preset": ENTRY.preset}, train={"steps": 2, "batch_size": 2}
    )
    result = train(config, tmp_path_factory.mktemp("pretrain"), inline_eval=False, progress=False)
    return result.run.path


@pytest.fixture(scope="module")
def published(pretrained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding RELATIVE: the run's checkpoint packed as Model Garden packs its own."""
    root = tmp_path_factory.mktemp("bucket")
    _pack_like_model_garden(pretrained_run / "ckpt-2", root / RELATIVE)
    return root


def _pack_like_model_garden(prefix: Path, archive: Path) -> None:
    """The checkpoint at `prefix` in a .tar.gz laid out as Model Garden's."""
    folder = Path(RELATIVE).name.removesuffix(".tar.gz")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for part in ("index", "data-00000-of-00001"):
            tar.add(f"{prefix}.{part}", f"{folder}/ckpt-277200.{part}")
        state = b'model_checkpoint_path: "ckpt-277200"\nall_model_checkpoint_paths: "ckpt-277200"\n'
        info = tarfile.TarInfo(f"{folder}/checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))


@pytest.fixture
def server(published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZooServer]:
    state, httpd = serve(published)
    monkeypatch.setenv("TFOD_ZOO_MIRROR", state.url)
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    yield state
    httpd.shutdown()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_is_clean() -> bool:
    return not (cache_dir() / "zoo").exists() or not any((cache_dir() / "zoo").iterdir())


@pytest.mark.slow
def test_get_downloads_checks_and_caches_then_makes_no_network_call(
    server: ZooServer, published: Path
) -> None:
    cached = fetch(f"zoo:{NAME}", progress=False)
    assert cached.prefix.name == "ckpt-277200" and Path(f"{cached.prefix}.index").is_file()
    assert cached.manifest["sha256"] == _sha256(published / RELATIVE)
    assert cached.manifest["url"] == ENTRY.url and cached.manifest["bytes"] > 1e6
    assert server.requests == [(f"/{RELATIVE}", None)]
    again = fetch(f"zoo:{NAME}", progress=False)
    assert again.prefix == cached.prefix and len(server.requests) == 1, "a cached entry is fetched"

    (Path(f"{cached.prefix}.index")).write_bytes(b"tampered")
    with pytest.raises(TfodError, match="changed since it was downloaded"):
        fetch(f"zoo:{NAME}", progress=False)


@pytest.mark.slow
def test_a_killed_download_leaves_nothing_usable_and_resumes(
    server: ZooServer, published: Path
) -> None:
    server.delay = 0.05
    env = {**os.environ, "TFOD_ZOO_MIRROR": server.url, "TFOD_CACHE": str(cache_dir())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfod", "zoo", "get", NAME], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial = cache_dir() / "downloads" / NAME / (Path(RELATIVE).name + ".partial")
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.stat().st_size > 256 * 1024):
        assert time.monotonic() < deadline and proc.poll() is None, "the download did not start"
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert not cache_folder(f"zoo:{NAME}").exists(), "a killed download must not look usable"
    have = partial.stat().st_size
    assert 0 < have < (published / RELATIVE).stat().st_size

    server.delay = 0.0
    cached = fetch(f"zoo:{NAME}", progress=False)
    assert server.requests[-1] == (f"/{RELATIVE}", f"bytes={have}-"), "it resumed with a Range"
    assert cached.manifest["sha256"] == _sha256(published / RELATIVE)
    assert not partial.exists()


@pytest.mark.slow
def test_a_wrong_sha256_fails_cleanly(server: ZooServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(catalog.ZOO, NAME, dataclasses.replace(ENTRY, sha256="0" * 64))
    with pytest.raises(TfodError, match="sha256 mismatch: expected 0000") as info:
        fetch(f"zoo:{NAME}", progress=False)
    assert f"{server.url}/{RELATIVE}" in str(info.value), "the source that served them is named"
    assert _cache_is_clean() and not (cache_dir() / "downloads" / NAME).exists()


def test_a_corrupt_archive_and_a_404_fail_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "x").mkdir(parents=True)
    (bucket / "x" / "broken.tar.gz").write_bytes(b"\x1f\x8b this is no gzip stream")
    with tarfile.open(bucket / "x" / "empty.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("model/README")
        tar.addfile(info, io.BytesIO(b""))
    with tarfile.open(bucket / "x" / "unsafe.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.index")
        tar.addfile(info, io.BytesIO(b""))
    state, httpd = serve(bucket)
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    try:
        for name, message in [
            ("broken.tar.gz", "not a readable .tar.gz"),
            ("empty.tar.gz", "holds no TensorFlow checkpoint"),
            ("unsafe.tar.gz", "unsafe archive member '../../escaped.index'"),
            ("missing.tar.gz", "download failed: HTTP 404"),
        ]:
            url = f"{state.url}/x/{name}"
            with pytest.raises(TfodError, match=message) as info:
                fetch(url, progress=False)
            assert url in str(info.value)
            assert _cache_is_clean(), name
        assert not list(tmp_path.rglob("escaped.index"))
    finally:
        httpd.shutdown()


def test_an_unreachable_host_names_the_mirror_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TFOD_ZOO_MIRROR", "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(TfodError, match="TFOD_ZOO_MIRROR"):
        fetch(f"zoo:{NAME}", progress=False)
    assert _cache_is_clean()


# What Google Cloud Storage answered for every tf_model_garden file in February 2026
# (tensorflow/models#13610).
GCS_ACCESS_DENIED = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access "
    "denied.</Message><Details>Anonymous caller does not have storage.objects.get access to the "
    "Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may "
    "not exist).</Details></Error>"
)


def _refuse(handler: BaseHTTPRequestHandler) -> None:
    body = GCS_ACCESS_DENIED.encode()
    handler.send_response(403)
    handler.send_header("Content-Type", "application/xml; charset=UTF-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def two_hosts(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ZooServer, ZooServer]]:
    """The entry's publisher and a second source (the catalog's `mirrors`), both serving it."""
    (publisher, first), (other, second) = serve(published), serve(published)
    entry = dataclasses.replace(
        ENTRY, url=f"{publisher.url}/{RELATIVE}", mirrors=(f"{other.url}/{RELATIVE}",)
    )
    monkeypatch.setitem(catalog.ZOO, NAME, entry)
    monkeypatch.delenv("TFOD_ZOO_MIRROR", raising=False)
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    yield publisher, other
    first.shutdown()
    second.shutdown()


@pytest.mark.slow
def test_a_publisher_refusing_access_falls_through_to_the_next_source(
    two_hosts: tuple[ZooServer, ZooServer], published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher, other = two_hosts
    publisher.routes[f"/{RELATIVE}"] = _refuse
    cached = fetch(f"zoo:{NAME}", progress=False)
    output = capsys.readouterr().err
    assert f"{publisher.url}/{RELATIVE}: HTTP 403 AccessDenied: the publisher refuses" in output
    assert "not a network fault" in output
    assert f"fetched from {other.url}/{RELATIVE} (source 2)" in output
    assert cached.manifest["fetched_from"] == [f"{other.url}/{RELATIVE}"]
    assert cached.manifest["sha256"] == _sha256(published / RELATIVE)


@pytest.mark.slow
def test_every_source_refusing_is_one_message_with_the_ways_out(
    two_hosts: tuple[ZooServer, ZooServer], capfd: pytest.CaptureFixture[str]
) -> None:
    publisher, other = two_hosts
    publisher.routes[f"/{RELATIVE}"] = _refuse
    other.routes[f"/{RELATIVE}"] = lambda handler: handler.send_error(503, "Slow Down")
    code, output = run_tfod(["zoo", "get", NAME], capfd)
    assert code == 1 and "Traceback" not in output, output
    assert f"{NAME}: no source gave it (2 tried):" in output
    assert f"  {publisher.url}/{RELATIVE}: HTTP 403 AccessDenied" in output
    assert f"  {other.url}/{RELATIVE}: download failed: HTTP 503 Slow Down" in output
    assert f"Ways out: a mirror holding {RELATIVE}" in output
    assert f"`tfod zoo pack {NAME}`" in output
    assert "start from another publisher (" in output
    assert "`tfod init --pretrained mobilenetv2-imagenet-keras`" in output
    assert _cache_is_clean()


@pytest.mark.slow
def test_a_second_source_with_other_bytes_is_refused(
    two_hosts: tuple[ZooServer, ZooServer], published: Path, tmp_path: Path
) -> None:
    publisher, other = two_hosts
    first = fetch(f"zoo:{NAME}", progress=False)  # from the publisher: its sha256 is recorded
    assert first.manifest["fetched_from"] == [f"{publisher.url}/{RELATIVE}"]
    changed = tmp_path / "changed.tar.gz"
    changed.write_bytes((published / RELATIVE).read_bytes() + b"\0")  # another file
    other.routes[f"/{RELATIVE}"] = lambda handler: _send(handler, changed.read_bytes())
    publisher.routes[f"/{RELATIVE}"] = _refuse
    with pytest.raises(TfodError, match="recorded at the first fetch") as info:
        fetch(f"zoo:{NAME}", progress=False, force=True)
    assert f"{other.url}/{RELATIVE}: sha256 mismatch: expected {first.manifest['sha256']}" in str(
        info.value
    )
    assert _cache_is_clean()


def _send(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.mark.slow
def test_zoo_check_asks_every_source_for_one_byte(
    two_hosts: tuple[ZooServer, ZooServer], published: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from tfod.zoo.mirror import check

    publisher, other = two_hosts
    publisher.routes[f"/{RELATIVE}"] = _refuse
    size = (published / RELATIVE).stat().st_size
    rows = [(p.source, p.status, p.size) for p in check([NAME])]
    assert rows == [
        (f"{publisher.url}/{RELATIVE}", "AccessDenied", None), (f"{other.url}/{RELATIVE}", "ok", size)
    ]  # fmt: skip
    assert other.requests == [(f"/{RELATIVE}", "bytes=0-0")], "one byte asked, nothing fetched"
    code, output = run_tfod(["zoo", "check", NAME], capfd)
    assert code == 0 and "AccessDenied" in output, output

    other.routes[f"/{RELATIVE}"] = _refuse
    code, output = run_tfod(["zoo", "check", NAME], capfd)
    assert code == 1 and f"no source answers for {NAME}" in output, output


@pytest.mark.slow
def test_zoo_pack_serves_a_fine_tune_from_an_empty_cache(
    server: ZooServer, published: Path, demo_data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A machine that has the entry packs it; another serves the folder with `python -m
    http.server`; a third, with an empty cache, fine-tunes from it. The file is the published
    one byte for byte, so every check (and an earlier record of its sha256) still holds."""
    from tfod.runs.rundir import RunDir
    from tfod.train.trainer import train

    fetch(f"zoo:{NAME}", progress=False)
    mirror, tar = tmp_path / "mirror", tmp_path / "mirror.tar"
    for out in (mirror, tar):
        code, output = run_tfod(["zoo", "pack", NAME, "--out", str(out)], capfd)
        assert code == 0 and "Wrote 1 entry (1 file(s)" in output, output
    digest = _sha256(published / RELATIVE)
    assert _sha256(mirror / RELATIVE) == digest
    assert (mirror / "SHA256SUMS").read_text() == f"{digest}  {RELATIVE}\n"
    with tarfile.open(tar) as archive:
        assert archive.getnames() == [RELATIVE, "SHA256SUMS", "tfod-mirror.json"]

    http_server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(mirror)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert http_server.stdout is not None
        port = http_server.stdout.readline().split(" port ")[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "empty-cache"))
        monkeypatch.setenv("TFOD_ZOO_MIRROR", url)
        config = smoke_config(
            demo_data, name="from-mirror", model={
                "preset": ENTRY.preset, "init_checkpoint": f"zoo:{NAME}",
                "init_modules": "backbone+decoder",
            }, train={"steps": 1, "batch_size": 2},
        )  # fmt: skip
        result = train(config, tmp_path / "runs", inline_eval=False, progress=False)
    finally:
        http_server.kill()
        http_server.wait()
    source = RunDir(result.run.path).read()["initialized_from"]["source"]
    assert source["sha256"] == digest and source["url"] == ENTRY.url

    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "folder-cache"))
    monkeypatch.setenv("TFOD_ZOO_MIRROR", str(mirror))
    assert fetch(f"zoo:{NAME}", progress=False).manifest["sha256"] == digest


def test_zoo_pack_names_an_entry_that_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    code, output = run_tfod(["zoo", "pack", NAME, "--out", str(tmp_path / "m")], capfd)
    assert code == 1 and f"{NAME} is not cached here: `tfod zoo get {NAME}` first" in output
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_zoo_add_caches_a_copy_once_it_restores_into_the_preset(
    published: Path, smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The publisher unreachable, a colleague's copy of the archive: cached as the entry, with
    the restore report (the copy's head is for 3 classes, not COCO's: re-initialised), then used
    with no network call and served on by `zoo pack`; a later copy of other bytes is refused and
    the cached entry stays."""
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TFOD_ZOO_MIRROR", "http://127.0.0.1:9")  # the discard port: refused
    copy = tmp_path / "from-a-colleague.tar.gz"
    shutil.copyfile(published / RELATIVE, copy)
    code, output = run_tfod(["zoo", "add", NAME, "--from", str(copy)], capfd)
    assert code == 0, output
    assert f"Restored into {ENTRY.preset} (with COCO's classes)" in output
    assert "re-initialised" in output and f"Cached zoo:{NAME} from {copy}" in output
    found = fetch(f"zoo:{NAME}", progress=False)
    assert found.manifest["sha256"] == _sha256(copy)
    assert found.manifest["fetched_from"] == [copy.resolve().as_uri()]
    code, output = run_tfod(["zoo", "pack", NAME, "--out", str(tmp_path / "mirror")], capfd)
    assert code == 0 and _sha256(tmp_path / "mirror" / RELATIVE) == _sha256(copy), output

    other = tmp_path / "other.tar.gz"
    _pack_like_model_garden(smoke_run / "ckpt-4", other)
    code, output = run_tfod(["zoo", "add", NAME, "--from", str(other)], capfd)
    assert code == 1 and "sha256 mismatch" in output, output
    assert fetch(f"zoo:{NAME}", progress=False).manifest["sha256"] == _sha256(copy)


@pytest.mark.slow
def test_zoo_add_refuses_a_checkpoint_of_another_model_and_caches_nothing(
    smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.tar.gz"
    _pack_like_model_garden(smoke_run / "ckpt-4", other)
    code, output = run_tfod(["zoo", "add", NAME, "--from", str(other)], capfd)
    assert code == 1 and "Traceback" not in output, output
    assert "does not fit this preset's backbone" in output and "nothing was cached" in output
    assert _cache_is_clean() and not (cache_dir() / "sha256").exists()
    code, output = run_tfod(["zoo", "add", NAME, "--from", str(tmp_path / "missing.tar.gz")], capfd)
    assert code == 1 and "missing.tar.gz" in output and "Traceback" not in output, output


def test_a_local_mirror_folder_serves_air_gapped_hosts(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TFOD_ZOO_MIRROR", str(published))
    assert fetch(f"zoo:{NAME}", progress=False).manifest["url"] == ENTRY.url


@pytest.mark.slow
def test_the_readme_path_fine_tunes_from_the_zoo_exports_verifies_and_predicts(
    server: ZooServer,
    pretrained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The README's "Train on your own images" commands, run as they are written in a folder
    holding `path/to/labelled/` (COCO) and `photos/`; only tfod.yaml's recipe is cut to 2 steps."""
    import numpy as np
    import tensorflow as tf
    import yaml

    from tfod.model.experiment import load_experiment
    from tfod.runs.rundir import RunDir
    from tfod.train import finetune
    from tfod.train.task import TfodRetinaNetTask

    monkeypatch.chdir(tmp_path)
    WRITERS["coco"](tmp_path / "path" / "to" / "labelled")
    shutil.copytree(tmp_path / "path" / "to" / "labelled" / "images", tmp_path / "photos")
    convert_, init, train, export, predict = readme_commands("Train on your own images")
    outputs = {}
    for command in (convert_, init, train, export, predict):
        assert command[0] == "tfod", command
        if command is train:  # the recipe, at a 5-image dataset's scale
            recipe = yaml.safe_load(Path("tfod.yaml").read_text())
            assert recipe["model"] == {
                "preset": ENTRY.preset, "init_checkpoint": f"zoo:{NAME}", "init_modules": "backbone+decoder"
            }  # fmt: skip
            assert recipe["train"]["steps"] == 2000 and recipe["train"]["learning_rate"] == 0.04
            assert "Fine-tuning recipe" in Path("tfod.yaml").read_text()
            # Batch 2 for speed (the dataset has 5 training images): the rate scales with it.
            recipe["train"].update(steps=2, batch_size=2, learning_rate=0.01)
            Path("tfod.yaml").write_text(yaml.safe_dump(recipe))
        code, outputs[command[1]] = run_tfod(command[1:], capfd)
        assert code == 0, f"{shlex.join(command)}:\n{outputs[command[1]]}"

    assert f"Started from zoo:{NAME}" in outputs["train"]
    assert "a new head for this dataset" in outputs["train"]
    started = RunDir(Path("runs/mine")).read()["initialized_from"]
    assert started["source"]["url"] == ENTRY.url
    assert started["source"]["sha256"] == fetch(f"zoo:{NAME}").manifest["sha256"]
    report = started["report"]
    assert report["backbone"]["action"] == report["decoder"]["action"] == "restored"
    assert report["head"]["action"] == "random init" and report["backbone"]["variables"] > 200
    for row in ("model_int8.tflite · MediaPipe", "ONNX Runtime, opset"):
        assert row in outputs["export"]
    assert (tmp_path / "predictions" / "detections.json").is_file(), outputs["predict"]

    # Exactly: a model restored as the trainer does holds the pretrained run's values.
    experiment = load_experiment(RunDir(Path("runs/mine")))
    model = TfodRetinaNetTask(experiment.task).build_model()
    classifier = finetune.classifier_size(experiment.task)
    plan = finetune.plan_restore(f"zoo:{NAME}", ["backbone", "decoder"], classifier)
    finetune.restore(model, plan)
    source = load_experiment(RunDir(pretrained_run))
    reference = TfodRetinaNetTask(source.task).build_model()
    tf.train.Checkpoint(model=reference).read(str(pretrained_run / "ckpt-2")).expect_partial()
    for module in ("backbone", "decoder"):
        mine, theirs = getattr(model, module).variables, getattr(reference, module).variables
        assert [v.shape for v in mine] == [v.shape for v in theirs]
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_a_checkpoint_of_another_layout_stops_before_step_one(
    server: ZooServer, demo_data: Path, tmp_path: Path
) -> None:
    """The older preset (levels 3-6, no Keras-layer FPN) cannot take the published decoder."""
    from tfod.train.trainer import train

    config = smoke_config(
        demo_data, name="mismatch", model={
            "preset": "retinanet-mobilenetv2-256", "init_checkpoint": f"zoo:{NAME}",
            "init_modules": "backbone+decoder",
        }, train={"steps": 2, "batch_size": 2},
    )  # fmt: skip
    with pytest.raises(TfodError, match="does not fit this preset's backbone, decoder"):
        train(config, tmp_path / "runs", inline_eval=False, progress=False)


@pytest.mark.network
@pytest.mark.parametrize("name", list(catalog.ZOO))
def test_every_zoo_url_answers(name: str) -> None:
    entry = catalog.ZOO[name]
    for url in [entry.https_url + suffix for suffix in catalog.suffixes(entry.kind)]:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method="HEAD"), timeout=20
            ) as r:
                assert r.status == 200, url
        except urllib.error.HTTPError as err:
            pytest.fail(f"{url}: HTTP {err.code}")
        except (urllib.error.URLError, OSError) as err:
            pytest.skip(f"offline: {url} is unreachable from this host ({err})")
