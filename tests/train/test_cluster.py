"""TF_CONFIG and `train.strategy`: every malformed cluster and every mismatch is a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import smoke_config
from tfod.config.experiment import build_experiment, make_plan
from tfod.data.dataset import load_summary
from tfod.errors import TfodError
from tfod.train.cluster import Cluster, Placement, read_tf_config, resolve
from tfod.train.preflight import run_checks

TWO = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}


def _read(value: Any) -> Cluster | None:
    raw = value if isinstance(value, str) else json.dumps(value)
    return read_tf_config({"TF_CONFIG": raw})


def test_a_cluster_is_read_in_rank_order() -> None:
    cluster = _read(
        {"cluster": {"worker": ["w0:2222", "w1:2222"], "chief": ["c:2222"]},
         "task": {"type": "worker", "index": 1}}
    )  # fmt: skip
    assert cluster is not None
    assert cluster.addresses == ("c:2222", "w0:2222", "w1:2222")
    assert (cluster.rank, cluster.is_chief) == (2, False)
    assert _read({**TWO, "task": {"type": "worker", "index": 0}}).is_chief  # type: ignore[union-attr]
    assert read_tf_config({}) is None


@pytest.mark.parametrize(
    ("tf_config", "expected"),
    [
        ("{not json", "is not JSON"),
        ([1, 2], "must be a JSON object"),
        ({"task": {"type": "worker", "index": 0}}, "has no `cluster`"),
        ({"cluster": {"worker": ["a:1"]}}, "has no `task`"),
        ({**TWO, "cluster": {"worker": ["a:1"], "ps": ["p:1"]}}, "ps"),
        ({**TWO, "cluster": {"worker": ["a:1"], "evaluator": ["e:1"]}}, "tfod eval --watch"),
        ({**TWO, "cluster": {"worker": ["a", "b:1"]}}, '"host:port"'),
        ({**TWO, "cluster": {"worker": ["a:1", "a:1"]}}, "used twice"),
        ({**TWO, "cluster": {"worker": ["a:1"], "chief": ["c:1", "d:1"]}}, "one address"),
        ({**TWO, "task": {"type": "worker", "index": 2}}, "not in the cluster"),
        ({**TWO, "task": {"type": "chief", "index": 0}}, "not in the cluster"),
    ],
)
def test_malformed_tf_config_is_named(tf_config: Any, expected: str) -> None:
    with pytest.raises(TfodError, match="TF_CONFIG") as err:
        _read(tf_config)
    assert expected in str(err.value)


def test_auto_strategy() -> None:
    cluster = _read(TWO)
    assert resolve("auto", 0, None).strategy == "one_device"
    assert resolve("auto", 1, None).strategy == "one_device"
    assert resolve("auto", 4, None).strategy == "mirrored"
    multi = resolve("auto", 2, cluster)
    assert (multi.strategy, multi.replicas, multi.workers, multi.is_chief) == (
        "multi_worker", 4, 2, False,
    )  # fmt: skip
    assert resolve("auto", 0, cluster).replicas == 2  # CPU workers: one replica each


def test_strategy_and_tf_config_must_agree() -> None:
    with pytest.raises(TfodError, match="multi_worker needs TF_CONFIG"):
        resolve("multi_worker", 0, None)
    with pytest.raises(TfodError, match="would wait for it"):
        resolve("mirrored", 2, _read(TWO))


def test_batch_must_divide_among_replicas_and_the_rule_names_them(demo_data: Path) -> None:
    config = smoke_config(demo_data, train={"batch_size": 7, "learning_rate": 1.0})
    summary = load_summary(demo_data)
    plan = make_plan(config, summary)
    experiment = build_experiment(config, plan)
    three = Cluster(("a:1", "b:1", "c:1"), "worker", 0, False)
    findings = run_checks(config, plan, summary, experiment, Placement("multi_worker", 0, three))
    messages = {f.field: f.message for f in findings if f.severity == "error"}
    assert "does not divide among 3 replicas" in messages["train.batch_size"]
    assert "e.g. 6 or 9" in messages["train.batch_size"]
    assert "2 on each of 3 replicas" in messages["train.learning_rate"]
    one = run_checks(config, plan, summary, experiment, Placement("one_device", 0))
    assert "train.batch_size" not in {f.field for f in one if f.severity == "error"}


def test_mixed_precision_on_cpu_is_a_warning(demo_data: Path) -> None:
    config = smoke_config(demo_data, train={"precision": "mixed_float16"})
    summary = load_summary(demo_data)
    plan = make_plan(config, summary)
    experiment = build_experiment(config, plan)
    assert experiment.runtime.mixed_precision_dtype == "float16"
    assert experiment.runtime.loss_scale == "dynamic"
    findings = run_checks(config, plan, summary, experiment, Placement("one_device", 0))
    assert [f.severity for f in findings if f.field == "train.precision"] == ["warning"]
    on_gpu = run_checks(config, plan, summary, experiment, Placement("one_device", 1))
    assert not [f for f in on_gpu if f.field == "train.precision"]


def test_batch_size_auto_is_refused_in_a_cluster(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfod.train.trainer import train

    monkeypatch.setenv("TF_CONFIG", json.dumps(TWO))
    with pytest.raises(TfodError, match="tfod batch-size"):
        train(smoke_config(demo_data, train={"batch_size": "auto"}), tmp_path, progress=False)
    assert not (tmp_path / "smoke").exists()


# --- waiting for the peers: bounded, said, and Ctrl-C honoured --------------------------------
def _closed_port() -> int:
    """A local port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_of(addresses: list[str], index: int) -> Cluster:
    cluster = _read({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
    assert cluster is not None
    return cluster


def test_a_peer_that_never_answers_is_named_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tfod.train.cluster import wait_for_peers

    dead = f"127.0.0.1:{_closed_port()}"
    cluster = _cluster_of([f"127.0.0.1:{_closed_port()}", dead], 0)
    with pytest.raises(TfodError, match=f"worker 0 waited [23] s for worker 1 at {dead}, which"):
        wait_for_peers(cluster, timeout=2.5, report_every=1.0)
    assert f"worker 0: waiting for worker 1 at {dead} (1 s)" in capsys.readouterr().err


def test_a_filtered_peer_cannot_stretch_the_wait() -> None:
    """A filtered address answers nothing: each probe waits out its own timeout."""
    import time

    from tfod.train.cluster import wait_for_peers

    def filtered(address: str) -> bool:
        time.sleep(1.5)  # a connect attempt that times out
        return False

    cluster = _cluster_of(["127.0.0.1:1", "192.0.2.1:2222"], 0)  # never contacted: probe injected
    started = time.monotonic()
    with pytest.raises(TfodError, match=r"worker 1 at 192\.0\.2\.1:2222"):
        wait_for_peers(cluster, timeout=3.0, probe=filtered)
    assert time.monotonic() - started < 6


def test_peers_that_start_find_each_other() -> None:
    import socket
    import threading

    from tfod.train.cluster import local_tf_configs, wait_for_peers

    configs = [read_tf_config({"TF_CONFIG": c}) for c in local_tf_configs(3)]
    errors: list[BaseException] = []
    servers: list[socket.socket] = []  # what TensorFlow's server would be once a task is through

    def run(cluster: Cluster | None) -> None:
        assert cluster is not None
        try:
            wait_for_peers(cluster, timeout=30)
        except BaseException as err:
            errors.append(err)
            return
        server = socket.create_server(("", int(cluster.addresses[cluster.rank].split(":")[1])))
        servers.append(server)

    threads = [threading.Thread(target=run, args=(c,)) for c in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for server in servers:
        server.close()
    assert not errors and not any(t.is_alive() for t in threads) and len(servers) == 3


def _train_in_a_dead_cluster(tmp_path: Path, demo_data: Path, timeout: str) -> Any:
    import os
    import subprocess
    import sys

    from tfod.config.schema import dump_config

    config = tmp_path / "tfod.yaml"
    cfg = smoke_config(
        demo_data, name="lonely", train={"batch_size": 4, "steps": 5, "peer_timeout": timeout}
    )
    config.write_text(dump_config(cfg))
    tf_config = _cluster_json([f"127.0.0.1:{_closed_port()}", f"127.0.0.1:{_closed_port()}"])
    return subprocess.Popen(
        [sys.executable, "-m", "tfod", "train", str(config), "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CONFIG": tf_config, "COLUMNS": "300"},
    )  # fmt: skip


def _cluster_json(addresses: list[str]) -> str:
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": 0}})


def test_train_in_a_cluster_whose_peer_never_comes_stops_with_one_line(
    tmp_path: Path, demo_data: Path
) -> None:
    proc = _train_in_a_dead_cluster(tmp_path, demo_data, "5s")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "error: TF_CONFIG: worker 0 waited 5 s for worker 1 at 127.0.0.1:" in output
    assert "Traceback" not in output and not (tmp_path / "runs" / "lonely").exists()


def test_ctrl_c_ends_the_wait_for_peers(tmp_path: Path, demo_data: Path) -> None:
    import signal
    import time

    proc = _train_in_a_dead_cluster(tmp_path, demo_data, "10m")
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "waiting for worker 1" not in seen:  # said every 10 s
        assert time.monotonic() < deadline and proc.poll() is None, seen
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in output, seen + output


def test_a_worker_names_other_settings_instead_of_waiting_for_a_chief_that_refused(
    tmp_path: Path, demo_data: Path
) -> None:
    """The chief refuses to resume a run of other settings; a worker used to see only its peer
    gone. Every task now checks before the cluster starts."""
    import os
    import subprocess
    import sys

    from tfod.config.schema import dump_config

    earlier = smoke_config(demo_data, name="mw", train={"batch_size": 4, "learning_rate": 0.01})
    run = tmp_path / "runs" / "mw"
    run.mkdir(parents=True)
    (run / "tfod.yaml").write_text(dump_config(earlier))
    (run / "run.json").write_text('{"status": "finished"}')
    config = tmp_path / "tfod.yaml"
    config.write_text(dump_config(smoke_config(demo_data, name="mw", train={"batch_size": 4})))
    tf_config = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{_closed_port()}", f"127.0.0.1:{_closed_port()}"]},
         "task": {"type": "worker", "index": 1}}
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tfod", "train", str(config), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CONFIG": tf_config, "COLUMNS": "300"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "run 'mw' exists with other settings (train.learning_rate" in result.stderr
    assert "waiting for" not in result.stderr
