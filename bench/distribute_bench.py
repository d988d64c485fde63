"""One worker vs. two workers (MultiWorkerMirroredStrategy on localhost), and float32 vs. mixed
precision, on this host's CPU: training steps/s and images/s side by side.

Usage: python bench/distribute_bench.py [--steps 60] [--batch 8]

Every setup trains the demo's preset (`retinanet-mobilenetv2-256`) from scratch on the same
generated data, the same global batch and seed, in its own `tfod train` process(es). Throughput is
measured from the run's TensorBoard events between the first and the last logged step, so the
start-up and the graph tracing are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tfod.config.schema import dump_config
from tfod.data.demo import make_demo
from tfod.train.cluster import local_tf_configs
from tfod.train.demo import DEMO_LEARNING_RATE, demo_config

SETUPS = [  # (label, workers, precision)
    ("1 worker, float32", 1, "float32"),
    ("2 workers, float32", 2, "float32"),
    ("1 worker, mixed_float16", 1, "mixed_float16"),
    ("1 worker, mixed_bfloat16", 1, "mixed_bfloat16"),
]


def _rate(run: Path) -> float:
    """Steps per second between the first and the last logged training step."""
    import tensorflow as tf

    times: dict[int, float] = {}
    for path in sorted((run / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(v.tag == "total_loss" for v in event.summary.value):
                times[int(event.step)] = event.wall_time
    steps = sorted(times)
    return (steps[-1] - steps[0]) / (times[steps[-1]] - times[steps[0]])


def bench(
    label: str, workers: int, precision: str, data: Path, root: Path, steps: int, batch: int
) -> float:
    config = demo_config(data, steps)
    raw = json.loads(config.model_dump_json())
    raw["name"] = label.replace(" ", "").replace(",", "-")
    raw["train"].update(batch_size=batch, learning_rate=DEMO_LEARNING_RATE, precision=precision)
    raw["eval"]["every_steps"] = 10
    path = root / f"{raw['name']}.yaml"
    path.write_text(dump_config(type(config).model_validate(raw)))
    tf_configs = local_tf_configs(workers) if workers > 1 else [""]
    procs = []
    for tf_config in tf_configs:
        env = {**os.environ, "TFOD_PROGRESS_SECONDS": "0", "TF_CONFIG": tf_config}
        command = [
            sys.executable,
            "-m",
            "tfod",
            "train",
            str(path),
            "--runs-dir",
            str(root / "runs"),
            "--no-eval",
        ]
        procs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        )
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{label}: training failed with exit codes {codes}")
    return _rate(root / "runs" / raw["name"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    console = Console()
    from tfod.train.trainer import gpu_count

    gpus = gpu_count()
    with tempfile.TemporaryDirectory(prefix="tfod-bench-distribute-") as tmp:
        root = Path(tmp)
        make_demo(root / "data", n=64, progress=False)
        rows = []
        for label, workers, precision in SETUPS:
            # Mixed precision on a CPU is emulated and very slow (measured: ~0.03x): fewer steps.
            steps = args.steps if precision == "float32" or gpus else max(20, args.steps // 3)
            console.print(f"[bold]{label}[/bold]: {steps} steps at global batch {args.batch}...")
            rate = bench(label, workers, precision, root / "data", root, steps, args.batch)
            rows.append((label, workers, precision, rate))
    base = rows[0][3]
    table = Table(
        title=f"Training throughput on this host ({os.cpu_count()} CPU cores), retinanet-mobilenetv2-256, global batch {args.batch}"
    )
    for column in (
        "setup",
        "replicas",
        "per-replica batch",
        "steps/s",
        "images/s",
        "vs 1 worker float32",
    ):
        table.add_column(column, justify="right" if column != "setup" else "left")
    for label, workers, _, rate in rows:
        table.add_row(
            label,
            str(workers),
            str(args.batch // workers),
            f"{rate:.2f}",
            f"{rate * args.batch:.1f}",
            f"{rate / base:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
