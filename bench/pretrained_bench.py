"""What a pretrained start is worth: fine-tuning from a zoo entry vs. training from scratch.

Usage: python bench/pretrained_bench.py [--pretrain-steps 400] [--imagenet-steps 600]
       [--resnet-steps 400] [--steps 150] [--images 64] [--mapping-only]

0. What the Keras-to-Model-Garden conversion keeps: a stand-in classifier per network (Keras's
   MobileNetV2 and ResNet50, each with Keras Applications' input scaling) trained on single demo
   shapes, its backbone converted as `tfod zoo` converts it and its top put back; accuracy in
   Keras and on Model Garden's backbone (`--mapping-only` stops after this table).

1. "COCO" stand-in: `retinanet-mobilenetv2-ssd-256` (the layout of Model Garden's published
   MobileNetV2 checkpoint) trained on the demo shapes (circle, square, triangle; 160 images).
2. Its checkpoint is packed exactly like Model Garden's tarball and served through
   $TFOD_ZOO_MIRROR (a local folder), so the fine-tune goes through the real user path:
   `tfod init --pretrained retinanet-mobilenetv2-256-coco`, the download, the cache, the restore.
3. "ImageNet" stand-in: Keras's own MobileNetV2 (`tf_keras.applications`, as Keras Applications
   trains it: pixels scaled to -1..1) trained to classify single demo shapes, its weights saved
   without the top as Keras publishes them and served at Keras's path through the same mirror,
   so the backbone start goes through `tfod init --pretrained mobilenetv2-imagenet-keras`, the
   download and the conversion into Model Garden's backbone.
4. Another generated dataset with other classes (round vs. angular: 2 classes, a new head) and
   few images, trained the same number of steps three times on the same preset: from scratch
   with the demo's recipe, fine-tuned from (2) and from the backbone of (3) with `tfod init
   --pretrained`'s recipes. AP at every evaluation, side by side, with the ratios to scratch.
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
from tfod.data.demo import CLASSES, Scenes, draw_scene, make_demo, write_scenes
from tfod.runs.rundir import RunDir
from tfod.train.demo import DEMO_LEARNING_RATE
from tfod.train.trainer import train
from tfod.zoo.catalog import GCS, ZOO

ENTRY = ZOO["retinanet-mobilenetv2-256-coco"]
KERAS_ENTRY = ZOO["mobilenetv2-imagenet-keras"]
STARTS = {"scratch": None, "COCO detector": ENTRY.name, "ImageNet backbone": KERAS_ENTRY.name}
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


def keras_pixels(model: str, pictures: np.ndarray) -> np.ndarray:
    """0..255 RGB pictures as Keras Applications trains `model`: MobileNetV2 on -1..1, ResNet50 on
    "caffe" pixels (BGR, less the mean pixel)."""
    from tfod.zoo.keras_weights import CAFFE_MEAN_RGB

    if model == "ResNet50":
        return (pictures - np.float32(CAFFE_MEAN_RGB))[..., ::-1]
    return pictures / 127.5 - 1


def train_stand_in(model: str, steps: int, weights: Path, seed: int = 3) -> dict[str, float]:
    """Train Keras's `model` (from `tf_keras.applications`) to name the one demo shape in a 96 px
    picture, `steps` steps of 32, and save its weights without the top at `weights`, as Keras
    Applications publishes them. Then convert that file into Model Garden's backbone as `tfod zoo`
    does and put the trained top back on it: what the conversion keeps of what was learnt.

    Returns:
        Accuracy on 256 new pictures: Keras's network, and Model Garden's with the converted
        weights (fed Model Garden's normalised pixels).
    """
    import tensorflow as tf
    import tf_keras
    from official.vision.ops.preprocess_ops import MEAN_NORM, STDDEV_NORM

    from tfod.zoo.keras_weights import convert, networks

    scenes = Scenes(size=96, objects=(1, 2), sides=(36, 72))
    rng = np.random.default_rng(seed)

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        pictures, labels = [], []
        while len(pictures) < n:
            picture, objects = draw_scene(rng, scenes)
            if objects:
                pictures.append(np.asarray(picture, np.float32))
                labels.append(CLASSES.index(objects[0][0]))
        return np.stack(pictures), np.asarray(labels)

    backbone, _ = networks(model, 1.0)
    for layer in backbone.layers:  # Keras's 0.99-0.999 keep a short run's statistics at their start
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.momentum = 0.9
    pooled = tf_keras.layers.GlobalAveragePooling2D()(backbone.output)
    top = tf_keras.layers.Dense(len(CLASSES), activation="softmax")
    classifier = tf_keras.Model(backbone.input, top(pooled))
    classifier.compile(
        tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    for _ in range(steps):
        pictures, labels = batch(32)
        classifier.train_on_batch(keras_pixels(model, pictures), labels)
    pictures, labels = batch(256)
    accuracy = float(classifier.evaluate(keras_pixels(model, pictures), labels, verbose=0)[1])
    weights.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(str(weights))

    prefix = convert(weights, model, 1.0, weights.parent / f"{model}-converted")
    _, garden = networks(model, 1.0)
    tf.train.Checkpoint(backbone=garden).read(str(prefix)).expect_partial()
    normalised = (pictures / 255 - np.float32(MEAN_NORM)) / np.float32(STDDEV_NORM)
    features = garden(normalised, training=False)
    last = features[max(features, key=int)]  # the level Keras's no-top output is
    predicted = top(tf.reduce_mean(last, axis=[1, 2])).numpy().argmax(axis=1)
    return {"keras": accuracy, "model garden": float((predicted == labels).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--imagenet-steps", type=int, default=600)
    parser.add_argument("--resnet-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument(
        "--mapping-only", action="store_true", help="only the Keras-to-Model-Garden table"
    )
    args = parser.parse_args()
    console = Console(width=160)
    every = max(10, args.steps // 3)
    with tempfile.TemporaryDirectory(prefix="tfod-pretrained-bench-") as tmp:
        root = Path(tmp)
        os.environ["TFOD_CACHE"] = str(root / "cache")
        os.environ["TFOD_ZOO_MIRROR"] = str(root / "mirror")
        assert KERAS_ENTRY.keras is not None
        stand_ins = {
            KERAS_ENTRY.keras[0]: (args.imagenet_steps, root / "mirror" / KERAS_ENTRY.url.removeprefix(GCS)),
            "ResNet50": (args.resnet_steps, root / "resnet" / "weights.h5"),
        }  # fmt: skip
        mapping = {}
        for model, (steps, weights) in stand_ins.items():
            clock = time.perf_counter()
            accuracy = train_stand_in(model, steps, weights)
            mapping[model] = {**accuracy, "minutes": (time.perf_counter() - clock) / 60}
        print_mapping(console, mapping, stand_ins)
        if args.mapping_only:
            return
        accuracy, imagenet_minutes = (
            mapping[KERAS_ENTRY.keras[0]][key] for key in ("keras", "minutes")
        )
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
        for start, entry in STARTS.items():
            path = root / f"{start.split()[0]}.yaml"
            write_template(path, data, ENTRY.preset, start.split()[0], False, entry)
            config = load_config(path)
            train_section = {**config.train.model_dump(), "steps": args.steps, "batch_size": 8}
            if entry is None:
                train_section["learning_rate"] = DEMO_LEARNING_RATE  # the demo's tuned recipe
            config = config.model_validate(
                {**config.model_dump(), "train": train_section, "eval": {"every_steps": every},
                 "model": {**config.model.model_dump(), "preset": ENTRY.preset}}
            )  # fmt: skip
            clock = time.perf_counter()
            result = train(config, root / "runs", progress=False)
            results[start] = (RunDir(result.run.path).metrics(), (time.perf_counter() - clock) / 60)

    table = Table(
        title=f"Pretrained starts vs. from scratch: {args.images} images of 2 new classes, "
        f"{ENTRY.preset}, {os.cpu_count()} cores. COCO stand-in: {len(CLASSES)} other classes, "
        f"{args.pretrain_steps} steps, {pretrain_minutes:.1f} min; ImageNet stand-in: Keras "
        f"MobileNetV2 classifying them, {args.imagenet_steps} steps, {imagenet_minutes:.1f} min, "
        f"accuracy {accuracy:.2f}"
    )
    table.add_column("step", justify="right")
    for metric in ("AP", "AP50"):
        for start in STARTS:
            table.add_column(f"{start} {metric}", justify="right")
    runs = [metrics for metrics, _ in results.values()]
    for evaluations in zip(*runs, strict=False):
        cells = [str(evaluations[0]["step"])]
        for metric in ("AP", "AP50"):
            scratch = evaluations[0]["metrics"][metric]
            cells.append(f"{scratch:.3f}")
            cells += [
                f"{e['metrics'][metric]:.3f} ({_ratio(e['metrics'][metric], scratch)})"
                for e in evaluations[1:]
            ]
        table.add_row(*cells)
    minutes = [f"{m:.1f}" for _, m in results.values()]
    table.add_row("minutes", *minutes, *[""] * len(minutes))
    console.print(table)


def print_mapping(
    console: Console, mapping: dict[str, dict[str, float]], stand_ins: dict[str, tuple[int, Path]]
) -> None:
    table = Table(
        title="Keras Applications' weights in Model Garden's backbones: a stand-in classifier "
        "trained in Keras (the demo shapes, 96 px, batch 32), its backbone converted as `tfod zoo` "
        "converts it, its top put back"
    )
    for column in ("network", "steps", "minutes", "Keras accuracy", "Model Garden accuracy"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for model, result in mapping.items():
        table.add_row(
            model, str(stand_ins[model][0]), f"{result['minutes']:.1f}",
            f"{result['keras']:.3f}", f"{result['model garden']:.3f}",
        )  # fmt: skip
    console.print(table)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "—"


if __name__ == "__main__":
    main()
