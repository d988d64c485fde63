"""The images and the compose stack, driven through the Docker SDK (`nox -s docker` builds the
images first). Every test here needs a Docker Engine; none is skipped silently without one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.data.sources import WRITERS
from tests.helpers import readme_commands

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PREFIX = os.environ.get("TFOD_IMAGE_PREFIX", "tfod-")


def image(target: str) -> str:
    return f"{PREFIX}{target}:latest"


@pytest.fixture(scope="module")
def client() -> Any:
    import docker

    engine = docker.from_env(timeout=600)
    engine.ping()
    return engine


def run(client: Any, target: str, command: list[str], **kwargs: Any) -> str:
    """Run a container to completion; its output, or a failure showing the output."""
    container = client.containers.run(image(target), command, detach=True, **kwargs)
    try:
        status = container.wait(timeout=1800)
        output: str = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, f"{target} {command} exited {status}:\n{output[-3000:]}"
    return output


@pytest.mark.parametrize("target", ["export", "train", "test"])
def test_each_image_runs_tfod_as_a_non_root_user_with_labels(client: Any, target: str) -> None:
    tfod = [] if target != "test" else ["tfod"]
    assert run(client, target, [*tfod, "--version"]).strip() == f"tfod {VERSION}"
    whoami = run(client, target, ["-c", "id -u; protoc --version"], entrypoint="sh")
    assert whoami.split()[0] == "1000" and "libprotoc" in whoami
    labels = client.images.get(image(target)).labels
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] not in ("", None)


@pytest.mark.parametrize("target", ["export", "train"])
def test_matplotlib_has_a_writable_config_folder(client: Any, target: str) -> None:
    """As user tfod, plotting warns of no unwritable /tmp/matplotlib (a compose-stack report)."""
    script = "import matplotlib, matplotlib.pyplot; print(matplotlib.get_configdir())"
    output = run(client, target, ["-c", script], entrypoint="python")
    assert "is not a writable directory" not in output, output
    assert output.strip().splitlines()[-1] == "/home/tfod/.cache/matplotlib"


def test_export_image_is_much_smaller_than_train(client: Any) -> None:
    train = client.images.get(image("train")).attrs["Size"]
    export = client.images.get(image("export")).attrs["Size"]
    assert export < 0.6 * train, (export, train)


@pytest.mark.parametrize("target", ["export", "train"])
def test_tfods_code_is_a_thin_layer_over_the_dependencies(client: Any, target: str) -> None:
    """A code change rebuilds, and a registry re-sends, a few megabytes, not TensorFlow: the
    layers from the one installing tfod's wheel up are small."""
    history = client.images.get(image(target)).history()  # newest first
    wheel = [i for i, layer in enumerate(history) if "--no-deps /dist/" in layer["CreatedBy"]]
    assert wheel, "no layer installs tfod's wheel"
    on_top = sum(layer["Size"] for layer in history[: wheel[0] + 1])
    assert on_top < 50e6, f"tfod's layers hold {on_top / 1e6:.0f} MB"


def test_train_image_has_cuda_tensorflow(client: Any) -> None:
    code = "import tensorflow as tf; print(tf.test.is_built_with_cuda())"
    out = run(
        client,
        "train",
        ["python", "-c", code],
        entrypoint="",
        environment={"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.strip().splitlines()[-1] == "True"


def cat(client: Any, volumes: dict[str, Any], path: str) -> str:
    return run(client, "export", ["cat", path], entrypoint="", volumes=volumes)


def test_nox_runs_inside_the_test_image(client: Any) -> None:
    out = run(
        client,
        "test",
        ["nox", "-s", "tests", "--", "tests/protos", "tests/data/test_labelmap.py", "-q"],
    )
    assert " passed" in out and "Session tests was successful" in out


def _compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` (v2) nor docker-compose (v1) is installed")


def _readme_compose_lines() -> list[tuple[dict[str, str], list[str]]]:
    """The README's container commands: (their VAR=value settings, what follows `docker compose`)."""
    lines = []
    for words in readme_commands("In containers"):
        settings = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        command = words[len(settings) :]
        assert command[:2] == ["docker", "compose"], words
        lines.append((settings, command[2:]))
    return lines


def test_the_readmes_compose_lines_name_files_profiles_and_services_that_exist() -> None:
    """Each README line, as compose reads it (files, profile, settings, the service it runs)."""
    for settings, args in _readme_compose_lines():
        env = {**os.environ, **settings, "COMPOSE_PROJECT_NAME": "tfodreadme"}
        files = [] if "-f" in args else ["-f", "compose.yaml"]
        options = args[: args.index("up")] if "up" in args else args[: args.index("run")]
        check = [*_compose_command(), *files, *options, "config", "--services"]
        result = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{settings} {args}: {result.stderr}"
        if "run" in args:
            assert args[-1] in result.stdout.split(), (args, result.stdout)


@pytest.mark.xdist_group("compose-up")
def test_compose_up_trains_evaluates_serves_tensorboard_and_exports(client: Any) -> None:
    """The README's first and last container lines: `up` (detached, images built by nox), then
    the exporter for the run it trained."""
    (_, up), *_, (export_settings, export) = _readme_compose_lines()
    assert up == ["up"] and list(export_settings) == ["TFOD_RUN"]
    project = f"tfodtest{uuid.uuid4().hex[:6]}"
    port = "16006"
    env = {
        **os.environ,
        "TFOD_DEMO_STEPS": "4",
        "TFOD_TENSORBOARD_PORT": port,
        "COMPOSE_PROJECT_NAME": project,
    }
    compose = [*_compose_command(), "-f", str(ROOT / "compose.yaml")]
    runs = {f"{project}_runs": {"bind": "/runs", "mode": "ro"}}

    def call(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    started = time.monotonic()
    try:
        call(*up, "-d", "--no-build")
        first_ap = None
        while time.monotonic() - started < 900:
            try:
                rows = cat(client, runs, "/runs/demo/metrics.jsonl")
            except Exception:  # not written yet
                rows = ""
            if rows.strip():
                first_ap = json.loads(rows.splitlines()[0])["metrics"]["AP"]
                break
            time.sleep(10)
        seconds = time.monotonic() - started
        assert first_ap is not None, call("logs", "--tail", "50").stdout
        print(f"compose up -> first AP ({first_ap:.3f}) in {seconds:.0f} s")
        for _ in range(60):  # without a TTY the trainer prints progress lines
            trainer_log = call("logs", "trainer").stdout
            if "train: step 4/4" in trainer_log:
                break
            time.sleep(5)
        assert "train: step 4/4" in trainer_log, trainer_log[-3000:]

        for _ in range(60):
            tensorboard = client.containers.get(_service(client, project, "tensorboard"))
            if tensorboard.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            time.sleep(5)
        assert tensorboard.attrs["State"]["Health"]["Status"] == "healthy"
        bindings = tensorboard.attrs["HostConfig"]["PortBindings"]["6006/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": port}]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200

        call(*export)  # TFOD_RUN: the demo's run, "demo" (the README's example names "mine")
        manifest = json.loads(cat(client, runs, "/runs/demo/export/export.json"))
        tflite = ["model_fp32.tflite", "model_fp16.tflite", "model_int8.tflite"]
        artefacts = ["saved_model", "model.onnx", *tflite]
        assert [a["file"] for a in manifest["artefacts"]] == artefacts
        for item in manifest["artefacts"][2:]:  # the MediaPipe environment the image carries
            assert item["metadata"] == "MediaPipe 0.10.21 object detector", item
        assert manifest["verification"] == "verify.json"
        verified = json.loads(cat(client, runs, "/runs/demo/export/verify.json"))
        rows = ["saved_model", "model.onnx"] + [n for t in tflite for n in (t, f"{t} · MediaPipe")]
        assert [r["name"] for r in verified["rows"]][1:] == rows
    finally:
        subprocess.run(
            [*compose, "--profile", "export", "down", "-v", "--remove-orphans"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )


@pytest.mark.xdist_group("compose-multiworker")
def test_compose_multiworker_trains_resumes_and_is_evaluated(client: Any) -> None:
    """compose.multiworker.yaml: a chief and a worker (CPU) train the demo to the end after a
    stop, into one run folder that the evaluator scores. (That two workers train like one is
    tests/train/test_multiworker.py's: the same `tfod train` processes, without the images.)"""
    project = f"tfodmw{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TFOD_DEMO_STEPS": "60", "COMPOSE_PROJECT_NAME": project}
    files = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "compose.multiworker.yaml")]
    compose = [*_compose_command(), *files]
    runs = {f"{project}_runs": {"bind": "/runs", "mode": "ro"}}

    def call(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def state() -> dict[str, Any]:
        try:
            return dict(json.loads(cat(client, runs, "/runs/demo/run.json")))
        except (AssertionError, ValueError):  # not written yet
            return {}

    def wait_for(condition: Any, what: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}:\n{call('logs', '--tail', '40').stdout}"
            time.sleep(5)

    def exit_codes() -> dict[str, int]:
        return {
            name: client.containers.get(_service(client, project, name)).attrs["State"]["ExitCode"]
            for name in ("trainer", "worker")
        }

    services = ("prepare", "trainer", "worker", "evaluator")
    try:
        call("up", "-d", "--no-build", *services)
        wait_for(lambda: state().get("step", 0) >= 10, "the cluster reaching step 10")
        call("stop", "-t", "300", "trainer", "worker")  # SIGTERM to both: a clean, agreed stop
        codes = exit_codes()
        assert codes == {"trainer": 75, "worker": 75}, (
            f"{codes}\n{call('logs', '--tail', '60').stdout}"
        )
        stopped = state()
        assert stopped["status"] == "stopped" and stopped["placement"]["replicas"] == 2

        call("up", "-d", "--no-build", *services)
        wait_for(lambda: state().get("status") == "finished", "the resumed run finishing")
        wait_for(lambda: exit_codes() == {"trainer": 0, "worker": 0}, "both workers exiting")
        assert f"Resuming from step {stopped['step']}" in call("logs", "trainer").stdout
        listing = run(client, "export", ["ls", "/runs", "/runs/demo"], entrypoint="", volumes=runs)
        assert "ckpt-60.index" in listing and listing.split("/runs/demo:")[0].split() == [
            "/runs:", "demo",
        ]  # fmt: skip

        def scored() -> list[int]:
            text = cat(client, runs, "/runs/demo/metrics.jsonl") if "metrics.jsonl" in run(
                client, "export", ["ls", "/runs/demo"], entrypoint="", volumes=runs
            ) else ""  # fmt: skip
            return [json.loads(line)["step"] for line in text.splitlines()]

        wait_for(lambda: 60 in scored(), "the evaluator scoring the last checkpoint", 600)

    finally:
        subprocess.run(
            [*compose, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, capture_output=True,
            timeout=300,
        )  # fmt: skip


def _service(client: Any, project: str, service: str) -> str:
    (container,) = client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={project}",
                f"com.docker.compose.service={service}",
            ]
        },
    )
    return str(container.id)


# A tarball laid out like Model Garden's published one, from a run of the matching preset, given
# to `tfod zoo add` (as a colleague's copy is) and written to /mirror by `tfod zoo pack`.
MAKE_PUBLISHED = (
    "set -e; tfod data demo --out /tmp/pets --n 16; "
    "tfod init --data /tmp/pets --out /tmp/coco.yaml --name coco "
    "--preset retinanet-mobilenetv2-ssd-256; "
    "tfod train /tmp/coco.yaml --runs-dir /tmp/runs --steps 2 --batch-size 2 --no-eval; "
    "mkdir -p /tmp/pack/mobilenetv2_ssd_i256_ckpt; "
    "for part in index data-00000-of-00001; do cp /tmp/runs/coco/ckpt-2.$part "
    "/tmp/pack/mobilenetv2_ssd_i256_ckpt/ckpt-277200.$part; done; "
    "tar -czf /tmp/copy.tar.gz -C /tmp/pack mobilenetv2_ssd_i256_ckpt; "
    "export TFOD_CACHE=/tmp/cache; "
    "tfod zoo add retinanet-mobilenetv2-256-coco --from /tmp/copy.tar.gz; "
    "tfod zoo pack retinanet-mobilenetv2-256-coco --out /mirror; "
    "chmod -R a+rX /mirror"
)


@pytest.mark.xdist_group("compose-reruns")
def test_compose_reruns_with_other_settings_and_fine_tunes_from_a_mirror_folder(
    client: Any,
) -> None:
    """On the volumes of a first `up`: more TFOD_DEMO_STEPS resume the run, a new TFOD_RUN trains
    a new one (no `down -v`), and TFOD_ZOO_MIRROR_DIR (a host folder `tfod zoo pack` wrote)
    serves a fine-tune whose checkpoint lands in the cache volume the exporter shares."""
    project = f"tfodre{uuid.uuid4().hex[:6]}"
    mirror = Path(tempfile.mkdtemp(prefix="tfod-mirror-"))
    mirror.chmod(0o755)  # read by the containers' non-root user
    compose = [*_compose_command(), "-f", str(ROOT / "compose.yaml")]
    runs = {f"{project}_runs": {"bind": "/runs", "mode": "ro"}}

    def call(*args: str, **settings: str) -> str:
        env = {**os.environ, "COMPOSE_PROJECT_NAME": project, **settings}
        result = subprocess.run(
            [*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    def train(**settings: str) -> str:
        """`up` the trainer (and its prepare) with `settings`; its log once it has exited 0."""
        call("up", "-d", "--no-build", "trainer", **settings)
        trainer = client.containers.get(_service(client, project, "trainer"))
        status = trainer.wait(timeout=900)
        log = trainer.logs().decode(errors="replace")
        assert status["StatusCode"] == 0, log[-3000:]
        return log

    def state(run: str) -> dict[str, Any]:
        return dict(json.loads(cat(client, runs, f"/runs/{run}/run.json")))

    try:
        train(TFOD_DEMO_STEPS="4")
        assert state("demo")["step"] == 4
        log = train(TFOD_DEMO_STEPS="6")  # the demo's evaluation interval changes with its steps
        assert "Resuming from step 4" in log and state("demo")["step"] == 6, log[-3000:]

        run(client, "train", ["-c", MAKE_PUBLISHED], entrypoint="sh", user="root",
            volumes={str(mirror): {"bind": "/mirror", "mode": "rw"}})  # fmt: skip
        log = train(
            TFOD_RUN="finetune", TFOD_DEMO_STEPS="2", TFOD_PRETRAINED="retinanet-mobilenetv2-256-coco",
            TFOD_ZOO_MIRROR_DIR=str(mirror),
        )  # fmt: skip
        assert "Started from zoo:retinanet-mobilenetv2-256-coco" in log, log[-3000:]
        finetune = state("finetune")  # a new TFOD_RUN, beside the first run on the same volumes
        assert finetune["status"] == "finished" and state("demo")["step"] == 6
        assert finetune["initialized_from"]["report"]["backbone"]["action"] == "restored"
        listing = call(
            "--profile", "export", "run", "--rm", "-e", "COLUMNS=250", "exporter", "zoo", "list"
        )
        row = next(
            line for line in listing.splitlines() if "retinanet-mobilenetv2-256-coco " in line
        )
        assert " yes " in row, listing

        # Another TFOD_DATA_SOURCE on the same volumes: prepare converts it, not "already made".
        source = WRITERS["coco"](mirror / "labelled")
        subprocess.run(["chmod", "-R", "a+rX", str(mirror)], check=True)
        log = call("up", "--no-build", "prepare", TFOD_DATA_SOURCE=str(source))
        assert "already made" not in log, log[-3000:]
        made = json.loads(
            cat(
                client,
                {f"{project}_data": {"bind": "/data", "mode": "ro"}},
                "/data/dataset/dataset.json",
            )
        )
        assert made["source"]["path"] == "/source", made["source"]
    finally:
        subprocess.run(
            [*compose, "--profile", "export", "down", "-v", "--remove-orphans"], cwd=ROOT,
            env={**os.environ, "COMPOSE_PROJECT_NAME": project}, capture_output=True, timeout=300,
        )  # fmt: skip
        shutil.rmtree(mirror, ignore_errors=True)
