"""Where a run trains: one device, every GPU of a host, or a cluster of hosts named by TF_CONFIG.

TensorFlow's own strategies do the work, as Model Garden's `distribute_utils` builds them:
`OneDeviceStrategy`, `MirroredStrategy` (all GPUs of a host) and `MultiWorkerMirroredStrategy`
(synchronous all-reduce across hosts, configured by the `TF_CONFIG` environment variable). This
module reads and checks `TF_CONFIG` and resolves `train.strategy` into a `Placement`; the trainer
builds the strategy from it.

TensorFlow's cluster start-up waits for every peer inside C++ while holding the interpreter: with
a peer that never comes it waits without end, deaf to Ctrl-C. So `make_strategy` first waits for
the peers in Python (each task answers on its own address meanwhile), says whom it waits for, and
gives up after `train.peer_timeout` naming them; during TensorFlow's own start-up Ctrl-C and
SIGTERM end the process at once.

One writer: in a cluster the chief (the `chief` task, or worker 0 when there is none) writes the
run folder; every other worker trains in a private temporary folder and writes nothing there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tfod.console import console
from tfod.errors import TfodError

STRATEGIES = ("one_device", "mirrored", "multi_worker")
TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """A checked TF_CONFIG: every task's address in rank order, and which one this process is."""

    addresses: tuple[str, ...]  # the chief first (if any), then the workers
    task_type: str
    task_index: int
    has_chief: bool

    @property
    def rank(self) -> int:
        """This task's position in `addresses`."""
        if self.task_type == "chief":
            return 0
        return self.task_index + int(self.has_chief)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"

    def task_names(self) -> list[str]:
        """Each address's task, in rank order ("chief 0", "worker 0", ...)."""
        names = ["chief 0"] if self.has_chief else []
        return names + [f"worker {i}" for i in range(len(self.addresses) - len(names))]


@dataclass(frozen=True)
class Placement:
    """`train.strategy` resolved on this host: the strategy, its replicas and this task's role."""

    strategy: str
    gpus: int  # on this host
    cluster: Cluster | None = None

    @property
    def workers(self) -> int:
        return len(self.cluster.addresses) if self.cluster else 1

    @property
    def replicas(self) -> int:
        per_host = max(1, self.gpus) if self.strategy != "one_device" else 1
        return per_host * self.workers

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    def describe(self, batch: int) -> str:
        where = f"{self.workers} workers" if self.cluster else "this host"
        devices = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return (
            f"{self.strategy} on {where} ({devices} each): {self.replicas} replica(s), "
            f"{batch // self.replicas} images per replica (global batch {batch})"
        )


def read_tf_config(environ: dict[str, str] | None = None) -> Cluster | None:
    """The cluster TF_CONFIG names (None: not set), checked.

    Raises:
        TfodError: not JSON, no `cluster` or `task`, addresses that are not host:port, a task
            that is not in the cluster, or task types tfod does not run (`ps`, `evaluator`).
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise TfodError(f"is not JSON ({err}): {raw[:200]}", "TF_CONFIG") from None
    if not isinstance(data, dict):
        raise TfodError("must be a JSON object with `cluster` and `task`", "TF_CONFIG")
    cluster, task = data.get("cluster"), data.get("task")
    example = (
        '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", '
        '"index": 0}}'
    )
    if not isinstance(cluster, dict) or not cluster:
        raise TfodError(f"has no `cluster` of task addresses; e.g. {example}", "TF_CONFIG")
    if not isinstance(task, dict):
        raise TfodError(
            f"has no `task` saying which task this process is; e.g. {example}", "TF_CONFIG"
        )
    addresses = _addresses(cluster)
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise TfodError(
            f"task {kind!r} {index!r} is not in the cluster ({_count(cluster)}): this process "
            "must be one of its tasks",
            "TF_CONFIG",
        )
    return Cluster(tuple(addresses), str(kind), int(index), bool(cluster.get("chief")))


def _addresses(cluster: dict[str, Any]) -> list[str]:
    """The cluster's task addresses, chief first, checked."""
    others = sorted(set(cluster) - set(TASK_TYPES))
    if others:
        raise TfodError(
            f"names task type(s) {', '.join(others)}: tfod trains with synchronous workers "
            "(`chief` and `worker`); its evaluator runs as its own service (`tfod eval --watch`)",
            "TF_CONFIG",
        )
    addresses: list[str] = []
    for task_type in TASK_TYPES:
        entries = cluster.get(task_type, [])
        if not isinstance(entries, list) or not all(_is_address(a) for a in entries):
            raise TfodError(
                f'cluster.{task_type} must be a list of "host:port" strings', "TF_CONFIG"
            )
        addresses += entries
    if len(cluster.get("chief", [])) > 1:
        raise TfodError("cluster.chief must have one address at most", "TF_CONFIG")
    duplicated = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicated:
        raise TfodError(f"address(es) used twice: {', '.join(duplicated)}", "TF_CONFIG")
    return addresses


def _is_address(value: Any) -> bool:
    if not isinstance(value, str) or ":" not in value:
        return False
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit()


def _count(cluster: dict[str, Any]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in cluster.items())


def resolve(requested: str, gpus: int, cluster: Cluster | None) -> Placement:
    """`train.strategy` (`auto` or one of STRATEGIES) on a host with `gpus` GPUs.

    `auto`: multi_worker when TF_CONFIG names a cluster, mirrored with more than one GPU, else
    one_device.

    Raises:
        TfodError: multi_worker without TF_CONFIG, or TF_CONFIG with a single-host strategy
            (the other workers would wait for this one forever).
    """
    if requested == "auto":
        requested = "multi_worker" if cluster else "mirrored" if gpus > 1 else "one_device"
    if requested not in STRATEGIES:
        raise TfodError(f"unknown strategy {requested!r}", "train.strategy")
    if requested == "multi_worker" and cluster is None:
        raise TfodError(
            "multi_worker needs TF_CONFIG naming the cluster and this task, e.g. "
            '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", '
            '"index": 0}} (the compose overlay and the Kubernetes JobSet set it)',
            "train.strategy",
        )
    if requested != "multi_worker" and cluster is not None:
        raise TfodError(
            f"{requested} trains on this host alone, but TF_CONFIG names a cluster "
            f"({len(cluster.addresses)} tasks) whose other workers would wait for it: use "
            "`strategy: multi_worker` (or auto), or unset TF_CONFIG",
            "train.strategy",
        )
    return Placement(requested, gpus, cluster if requested == "multi_worker" else None)


def make_strategy(placement: Placement, peer_timeout: float = 300.0) -> Any:
    """The tf.distribute strategy, built by Model Garden's `distribute_utils`.

    A multi-worker strategy must be made before TensorFlow runs anything else in the process; it
    is made once every peer answers (see `wait_for_peers`).
    """
    from official.common import distribute_utils

    name = {"multi_worker": "multi_worker_mirrored"}.get(placement.strategy, placement.strategy)
    gpus = min(placement.gpus, 1) if placement.strategy == "one_device" else placement.gpus
    if placement.cluster is None:
        return distribute_utils.get_distribution_strategy(distribution_strategy=name, num_gpus=gpus)
    wait_for_peers(placement.cluster, peer_timeout)
    with _signals_end_the_process():
        return distribute_utils.get_distribution_strategy(distribution_strategy=name, num_gpus=gpus)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def answers(address: str, timeout: float = 2.0) -> bool:
    """Does something accept TCP connections at "host:port"?"""
    try:
        with socket.create_connection(_split(address), timeout=timeout):
            return True
    except OSError:  # refused, filtered (timed out), a name that does not resolve (yet)
        return False


def wait_for_peers(
    cluster: Cluster,
    timeout: float,
    probe: Callable[[str], bool] = answers,
    report_every: float = 10.0,
) -> None:
    """Wait until every other task of `cluster` answers on its address, answering on this task's
    own address meanwhile (a peer waits for this one the same way).

    Raises:
        TfodError: some peers did not answer within `timeout` seconds; names them.
    """
    names = cluster.task_names()
    peers = {names[i]: a for i, a in enumerate(cluster.addresses) if i != cluster.rank}
    start = time.monotonic()
    reported = start
    with _answering(cluster.addresses[cluster.rank]):
        while True:
            peers = {name: address for name, address in peers.items() if not probe(address)}
            waited = time.monotonic() - start
            if not peers:
                return
            missing = ", ".join(f"{name} at {address}" for name, address in peers.items())
            if waited >= timeout:
                raise TfodError(
                    f"{cluster.name} waited {waited:.0f} s for {missing}, which did not answer: "
                    "start the same command there (with its own TF_CONFIG task), check that "
                    "this host reaches those addresses, or give it longer (train.peer_timeout)",
                    "TF_CONFIG",
                )
            if time.monotonic() - reported >= report_every:
                console.print(f"{cluster.name}: waiting for {missing} ({waited:.0f} s)")
                reported = time.monotonic()
            time.sleep(min(1.0, max(0.0, timeout - waited)))


@contextlib.contextmanager
def _answering(address: str) -> Iterator[None]:
    """Accept (and drop) TCP connections on `address`'s port, so peers see this task is up.

    TensorFlow's server takes the port over afterwards; a port already taken (a server of this
    process, or TensorFlow's own) needs no answering here.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _split(address)[1]))
    except OSError:
        listener.close()
        yield
        return
    listener.listen(64)
    listener.settimeout(0.2)
    stop = False

    def accept() -> None:
        while not stop:
            with contextlib.suppress(OSError):
                listener.accept()[0].close()

    thread = threading.Thread(target=accept, daemon=True, name="tfod-peer-answer")
    thread.start()
    try:
        yield
    finally:
        stop = True
        thread.join()
        listener.close()


@contextlib.contextmanager
def _signals_end_the_process() -> Iterator[None]:
    """Let Ctrl-C and SIGTERM end the process at once while TensorFlow holds the interpreter
    (Python's own handlers would run only after TensorFlow returns, which may be never)."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main's
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def local_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG for each of `workers` workers on this host, on free ports (worker 0 is the chief):
    a cluster on one machine, for tests, benchmarks and trying multi-worker training out."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("localhost", 0))
    addresses = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]


def any_worker(strategy: Any, flag: bool) -> bool:
    """True on every worker when `flag` is true on any of them (a cross-worker all-reduce, so
    every worker must call it at the same point)."""
    import tensorflow as tf

    return bool(_sum_over_workers(strategy)(tf.constant(float(flag))).numpy() > 0)


@functools.cache
def _sum_over_workers(strategy: Any) -> Any:
    import tensorflow as tf

    @tf.function  # type: ignore[untyped-decorator]
    def total(value: Any) -> Any:
        per_replica = strategy.run(tf.identity, args=(value,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return total
