"""A batch size that fits: real training steps at growing batches, measured, fitted and confirmed.

The search runs forward+backward steps of the actual model on the actual device at batch 2, 4,
8, ... while the fitted memory line predicts room, records each probe's peak memory, fits
`peak = fixed + per_image * batch` and picks the largest batch whose prediction stays within
`target` of the device memory, rounded down to a multiple of 8 and of the replica count. That
batch is then confirmed by a real step; if it fails (out of memory, or over budget — measurements
are noisy and allocators fragment) the next smaller multiple is confirmed instead, so the choice
is always a batch that was seen to work.

Devices: on a GPU, TensorFlow's allocator statistics (`get_memory_info` peak, reset between
probes) against the card's memory; on the CPU, the process's peak resident memory (VmHWM, reset
through /proc/self/clear_refs) against the host's (or the container's cgroup) memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tfod import atomic
from tfod.errors import TfodError

DEFAULT_TARGET = 0.8
ROUND_TO = 8
OK, OOM, OVER = "ok", "out of memory", "over budget"


class Device(Protocol):
    """What the search needs to know about a device."""

    name: str
    replicas: int

    def total_bytes(self) -> int: ...
    def reset_peak(self) -> None: ...
    def peak_bytes(self) -> int: ...


@dataclass(frozen=True)
class Probe:
    batch: int
    status: str
    peak_bytes: int | None
    seconds: float


@dataclass
class Choice:
    """The outcome of a search (stored in run.json and in the cache)."""

    batch: int
    device: str
    total_bytes: int
    budget_bytes: int
    fixed_bytes: float | None
    per_image_bytes: float | None
    probes: list[Probe] = field(default_factory=list)
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Choice:
        probes = [Probe(**p) for p in data.get("probes", [])]
        return cls(**{**data, "probes": probes})


def search(
    step: Callable[[int], None],
    device: Device,
    max_batch: int,
    target: float = DEFAULT_TARGET,
    start: int = 2,
) -> Choice:
    """Find the largest batch that trains within `target` of `device`'s memory.

    Args:
        step: runs one or more real training steps at the given global batch; raises TensorFlow's
            ResourceExhaustedError (or MemoryError) when the device runs out of memory.
        device: where `step` runs.
        max_batch: largest batch worth considering (e.g. the size of the training split).
        target: fraction of device memory the chosen batch may use.
        start: first batch probed.

    Raises:
        TfodError: not even the smallest batch fits.
    """
    if not 0 < target <= 1:
        raise TfodError(f"--target must be in (0, 1], got {target}")
    total = device.total_bytes()
    budget = int(total * target)
    unit = math.lcm(ROUND_TO, device.replicas)
    probes: list[Probe] = []
    smallest_bad: int | None = None
    batch = max(device.replicas, start // device.replicas * device.replicas)
    while batch <= max_batch:
        probe = _probe(step, device, batch, budget)
        probes.append(probe)
        if probe.status != OK:
            smallest_bad = batch
            break
        fit = _fit(probes)
        if fit is not None and fit[0] + fit[1] * 2 * batch > budget:
            break
        batch *= 2
    good = [p.batch for p in probes if p.status == OK]
    if not good:
        raise TfodError(
            f"even batch {probes[0].batch} does not fit in {target:.0%} of {device.name}'s "
            f"{_gb(total)} ({probes[0].status}); use a smaller preset or input size"
        )
    fit = _fit(probes)
    limit = min(max_batch, (smallest_bad - 1) if smallest_bad else max_batch)
    predicted = int((budget - fit[0]) / fit[1]) if fit is not None and fit[1] > 0 else max(good)
    candidate = _round_down(min(limit, max(predicted, max(good))), unit, device.replicas)
    while True:  # confirm; never return a batch that was not seen to work at this size
        confirm = _probe(step, device, candidate, budget)
        probes.append(confirm)
        if confirm.status == OK:
            break
        smaller = _round_down(candidate - 1, unit, device.replicas)
        if smaller < device.replicas or smaller >= candidate:
            raise TfodError(
                f"no batch size fits on {device.name}: batch {candidate} failed ({confirm.status})"
            )
        candidate = smaller
    return Choice(
        batch=candidate,
        device=device.name,
        total_bytes=total,
        budget_bytes=budget,
        fixed_bytes=None if fit is None else fit[0],
        per_image_bytes=None if fit is None else fit[1],
        probes=probes,
    )


def _probe(step: Callable[[int], None], device: Device, batch: int, budget: int) -> Probe:
    device.reset_peak()
    started = time.perf_counter()
    try:
        step(batch)
    except Exception as err:  # TensorFlow's ResourceExhaustedError, or a host MemoryError
        if not is_oom(err):
            raise
        return Probe(batch, OOM, None, time.perf_counter() - started)
    peak = device.peak_bytes()
    return Probe(batch, OK if peak <= budget else OVER, peak, time.perf_counter() - started)


def is_disk_full(err: BaseException) -> bool:
    """Is `err` a full disk (or quota)? TensorFlow reports one as ResourceExhaustedError too."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


def is_oom(err: BaseException) -> bool:
    """Is `err` the device running out of memory (and not a full disk)?"""
    if isinstance(err, MemoryError):
        return True
    if is_disk_full(err):
        return False
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tfod always has TensorFlow
        return False
    return isinstance(err, tf.errors.ResourceExhaustedError)


def _fit(probes: list[Probe]) -> tuple[float, float] | None:
    """Least-squares `peak = fixed + per_image * batch` over the successful probes."""
    points = [
        (p.batch, p.peak_bytes) for p in probes if p.status == OK and p.peak_bytes is not None
    ]
    if len({b for b, _ in points}) < 2:
        if len(points) == 1:
            batch, peak = points[0]
            return 0.0, peak / batch  # proportional: a conservative guess from one point
        return None
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((b - mean_b) ** 2 for b, _ in points)
    slope = sum((b - mean_b) * (m - mean_m) for b, m in points) / var
    if slope <= 0:  # noise swamped the signal: assume memory grows proportionally after all
        slope = max(m for _, m in points) / max(b for b, _ in points)
        return 0.0, slope
    return mean_m - slope * mean_b, slope


def _round_down(batch: int, unit: int, replicas: int) -> int:
    if batch >= unit:
        return batch // unit * unit
    return max(replicas, batch // replicas * replicas)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


# Devices ----------------------------------------------------------------------------------------
class CpuDevice:
    """The host: peak resident memory of this process against the host's or cgroup's memory."""

    name = "cpu"
    replicas = 1

    def __init__(self, total_override: int | None = None) -> None:
        self._total_override = total_override

    def total_bytes(self) -> int:
        if self._total_override:
            return self._total_override
        total = _proc_kb("/proc/meminfo", "MemTotal") * 1024
        for limit_file in (
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ):
            try:
                text = Path(limit_file).read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                total = min(total, int(text))
        return total

    def reset_peak(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")

    def peak_bytes(self) -> int:
        return _proc_kb("/proc/self/status", "VmHWM") * 1024


def _proc_kb(path: str, key: str) -> int:
    """A `Key:   123 kB` value from a /proc file."""
    match = re.search(rf"{key}:\s+(\d+) kB", Path(path).read_text())
    if match is None:
        raise TfodError(f"cannot read {key} from {path}: memory probing needs Linux /proc")
    return int(match.group(1))


class GpuDevice:
    """GPUs: TensorFlow allocator peaks (summed over replicas) against the cards' memory."""

    def __init__(self, count: int, total_override: int | None = None) -> None:
        self.replicas = count
        self.name = f"{count} GPU(s)"
        self._total_override = total_override

    def total_bytes(self) -> int:
        if self._total_override:
            return self._total_override
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError) as err:
            raise TfodError("cannot read GPU memory (nvidia-smi failed); pass --memory-gb") from err
        per_card = [int(line) * 2**20 for line in out.split() if line.strip().isdigit()]
        return sum(per_card[: self.replicas])

    def reset_peak(self) -> None:
        import tensorflow as tf

        for index in range(self.replicas):
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")

    def peak_bytes(self) -> int:
        import tensorflow as tf

        return sum(
            int(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"])
            for i in range(self.replicas)
        )


def local_device(memory_gb: float | None = None) -> Device:
    """The device training will use: all visible GPUs, else the CPU."""
    import tensorflow as tf

    override = int(memory_gb * 2**30) if memory_gb else None
    gpus = tf.config.list_physical_devices("GPU")
    return GpuDevice(len(gpus), override) if gpus else CpuDevice(override)


# Cache ------------------------------------------------------------------------------------------
def cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tfod" / "batch_sizes.json"


def cache_key(model: dict[str, Any], device: Device, total: int, target: float) -> str:
    """Same model (config incl. input size), same device kind and memory, same target."""
    import tensorflow as tf

    blob = json.dumps(
        [model, device.name, total, target, tf.__version__], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(key: str) -> Choice | None:
    try:
        entries = json.loads(cache_file().read_text())
        return Choice.from_dict({**entries[key], "cached": True})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(key: str, choice: Choice) -> None:
    path = cache_file()
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {**choice.as_dict(), "cached": False}
    atomic.write_json(path, entries)


# The actual model -------------------------------------------------------------------------------
def model_step(experiment: Any) -> Callable[[int], None]:
    """Two real training steps of the experiment's model and input pipeline at a given batch.

    Two, because the first also creates the optimizer's slots: the second shows steady state. One
    traced step per batch size: confirming a batch already probed does not trace it again.
    """
    import tensorflow as tf

    from tfod.train.task import make_task

    task = make_task(experiment.task)
    model = task.build_model()
    optimizer = task.create_optimizer(experiment.trainer.optimizer_config, experiment.runtime)
    train = tf.function(lambda inputs: task.train_step(inputs, model, optimizer))

    def step(batch: int) -> None:
        data = experiment.task.train_data.replace(global_batch_size=batch)
        iterator = iter(task.build_inputs(data))
        for _ in range(2):
            train(next(iterator))

    return step


def choose(
    experiment: Any,
    max_batch: int,
    target: float = DEFAULT_TARGET,
    fresh: bool = False,
    memory_gb: float | None = None,
) -> Choice:
    """The batch size for `experiment` on this machine: cached if known, else searched."""
    device = local_device(memory_gb)
    total = device.total_bytes()
    key = cache_key(
        {"model": experiment.task.model.as_dict(), "dtype": experiment.task.train_data.dtype, "max_batch": max_batch},
        device, total, target,
    )  # fmt: skip
    if not fresh and (hit := cached(key)) is not None:
        return hit
    choice = search(model_step(experiment), device, max_batch=max_batch, target=target)
    remember(key, choice)
    return choice
