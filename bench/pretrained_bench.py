"""What a pretrained start is worth: fine-tuning from a zoo entry vs. training from scratch.

Usage: python bench/pretrained_bench.py [--pretrain-steps 400] [--steps 150] [--images 64]

1. "COCO" stand-in: `retinanet-mobilenetv2-ssd-256` (the layout of Model Garden's published
   MobileNetV2 checkpoint) trained on the demo shapes (circle, square, triangle; 160 images).
2. Its checkpoint is packed exactly like Model Garden's tarball and served through
   $TFOD_ZOO_MIRROR (a local folder), so the fine-tune goes through the real user path:
   `tfod init --pretrained retinanet-mobilenetv2-256-coco`, the download, the cache, the restore.
3. Another generated dataset with other classes (round vs. angular: 2 classes, a new head) and
   few images, trained the same number of steps twice: fine-tuned from (2) with `tfod init
   --pretrained`'s recipe, and from scratch with the demo's recipe. AP at every evaluation, side
   by side, with the ratio.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tfod.config.schema import load_config
from tfod.config.template import write_template
from tfod.data.convert import ConvertOptions, convert
from tfod.data.demo import CLASSES, make_demo, write_scenes
from tfod.runs.rundir import RunDir
from tfod.train.demo import DEMO_LEARNING_RATE
from tfod.train.trainer import train
from tfod.zoo.catalog import GCS, ZOO

ENTRY = ZOO["retinanet-mobilenetv2-256-coco"]
ROUNDNESS = {"circle": "round", "square": "angular", "triangle": "angular"}


def other_dataset(root: Path, n: int, seed: int) -> Path:
    """Shapes with other classes (round / angular) and another seed: a different dataset."""
    source = root / "src"
    write_scenes(
        source, n, np.random.default_rng(seed), ("round", "angular"), ROUNDNESS.__getitem__
    )
    out = root / "shapes2"
    convert(source, out, ConvertOptions(seed=seed, progress=False))
    return out


def publish(run: Path, mirror: Path) -> None:
    """Pack the run's last checkpoint as Model Garden packs mobilenetv2_ssd_i256_ckpt.tar.gz."""
    _, prefix = RunDir(run).checkpoint("latest")
    archive = mirror / ENTRY.url.removeprefix(GCS)
    archive.parent.mkdir(parents=True)
    folder = "mobilenetv2_ssd_i256_ckpt"
    with tarfile.open(archive, "w:gz") as tar:
        for part in ("index", "data-00000-of-00001"):
            tar.add(f"{prefix}.{part}", f"{folder}/ckpt-277200.{part}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    console = Console()
    every = max(10, args.steps // 3)
    with tempfile.TemporaryDirectory(prefix="tfod-pretrained-bench-") as tmp:
        root = Path(tmp)
        os.environ["TFOD_CACHE"] = str(root / "cache")
        os.environ["TFOD_ZOO_MIRROR"] = str(root / "mirror")
        started = time.perf_counter()
        make_demo(root / "shapes", n=160, progress=False)
        write_template(root / "coco.yaml", root / "shapes", ENTRY.preset, "coco", False)
        coco = load_config(root / "coco.yaml").model_copy(deep=True)
        coco = coco.model_validate(
            {**coco.model_dump(), "train": {**coco.train.model_dump(), "steps": args.pretrain_steps,
             "learning_rate": DEMO_LEARNING_RATE}, "eval": {"every_steps": args.pretrain_steps}}
        )  # fmt: skip
        pretrained = train(coco, root / "runs", progress=False)
        publish(pretrained.run.path, root / "mirror")
        pretrain_minutes = (time.perf_counter() - started) / 60

        data = other_dataset(root, args.images, seed=7)
        results = {}
        for start in ("scratch", "pretrained"):
            path = root / f"{start}.yaml"
            write_template(
                path,
                data,
                ENTRY.preset,
                start,
                False,
                ENTRY.name if start == "pretrained" else None,
            )
            config = load_config(path)
            train_section = {**config.train.model_dump(), "steps": args.steps, "batch_size": 8}
            if start == "scratch":
                train_section["learning_rate"] = DEMO_LEARNING_RATE  # the demo's tuned recipe
            config = config.model_validate(
                {**config.model_dump(), "train": train_section, "eval": {"every_steps": every}}
            )
            clock = time.perf_counter()
            result = train(config, root / "runs", progress=False)
            results[start] = (RunDir(result.run.path).metrics(), (time.perf_counter() - clock) / 60)

    table = Table(
        title=f"Fine-tuning vs. from scratch: {args.images} images of 2 new classes, "
        f"{os.cpu_count()} cores (pretrained on {len(CLASSES)} other classes, "
        f"{args.pretrain_steps} steps, {pretrain_minutes:.1f} min)"
    )
    for column in (
        "step",
        "scratch AP",
        "pretrained AP",
        "ratio",
        "scratch AP50",
        "pretrained AP50",
        "ratio ",
    ):
        table.add_column(column, justify="right")
    scratch, fine = results["scratch"][0], results["pretrained"][0]
    for a, b in zip(scratch, fine, strict=False):
        ma, mb = a["metrics"], b["metrics"]
        table.add_row(
            str(a["step"]), f"{ma['AP']:.3f}", f"{mb['AP']:.3f}", _ratio(mb["AP"], ma["AP"]),
            f"{ma['AP50']:.3f}", f"{mb['AP50']:.3f}", _ratio(mb["AP50"], ma["AP50"]),
        )  # fmt: skip
    table.add_row(
        "minutes", f"{results['scratch'][1]:.1f}", f"{results['pretrained'][1]:.1f}", "", "", "", ""
    )
    console.print(table)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "—"


if __name__ == "__main__":
    main()
