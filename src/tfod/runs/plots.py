"""Pictures of runs: curves, per-class AP, precision-recall, predictions; several runs compared.

Per run, under RUN/plots/ (PNG, and the same images as TensorBoard images in RUN/plots/):
`curves.png` (training loss and AP/AP50 over steps), `per_class_ap.png`, `pr_curves.png`
(per class at IoU 0.5, best checkpoint) and `predictions.png` (validation images, ground truth
dashed, detections solid). `compare_plot` draws the curves of several runs on one figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfod.figures import image_grid, save_png, use_headless_backend
from tfod.runs.registry import summarize
from tfod.runs.rundir import LOSS_TAGS, RunDir

PLOTS = "plots"
SCORE_TO_DRAW = 0.3
PREDICTION_IMAGES = 8


def loss_history(run: RunDir) -> list[tuple[int, float]]:
    """(step, total loss) from the run's TensorBoard train events; a truncated file is read up to its end."""
    import tensorflow as tf

    points: dict[int, float] = {}
    for path in sorted((run.path / "train").glob("events.out.tfevents.*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    if value.tag in LOSS_TAGS:
                        number = (
                            float(tf.make_ndarray(value.tensor))
                            if value.HasField("tensor")
                            else value.simple_value
                        )
                        points[int(event.step)] = number
        except tf.errors.DataLossError:  # a crashed trainer's last, half-written record
            continue
    return sorted(points.items())


def metric_history(run: RunDir, name: str) -> list[tuple[int, float]]:
    return [
        (int(r["step"]), float(r["metrics"][name]))
        for r in run.metrics()
        if "step" in r and isinstance(r.get("metrics", {}).get(name), (int, float))
    ]


def write_run_plots(run: RunDir) -> list[Path]:
    """Write the run's plots (those its files allow) and return their paths."""
    use_headless_backend()
    out = run.path / PLOTS
    written = [save_png(out / "curves.png", _curves_figure([run]))]
    summary = summarize(run)
    best = next((r for r in run.metrics() if r.get("step") == summary.best_step), None)
    if best and best.get("per_class"):
        written.append(save_png(out / "per_class_ap.png", _per_class_figure(best)))
    pr_path = run.path / "eval" / f"pr-{summary.best_step}.json"
    if pr_path.is_file():
        written.append(
            save_png(
                out / "pr_curves.png",
                _pr_figure(json.loads(pr_path.read_text()), summary.best_step),
            )
        )
    detections = run.path / "eval" / f"detections-{summary.best_step}.json"
    data_dir = (run.read().get("dataset") or {}).get("dir")
    if detections.is_file() and data_dir and Path(data_dir).is_dir():
        figure = _predictions_figure(
            Path(data_dir), json.loads(detections.read_text()), summary.best_step
        )
        if figure is not None:
            written.append(save_png(out / "predictions.png", figure))
    _to_tensorboard(out, written, summary.best_step or summary.steps_done or 0)
    return written


def compare_plot(runs: list[RunDir], out: Path) -> Path:
    """Loss and AP/AP50 curves of several runs on one figure, written to `out`."""
    use_headless_backend()
    return save_png(out, _curves_figure(runs))


def _curves_figure(runs: list[RunDir]) -> Any:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.get_cmap("tab10")
    for index, run in enumerate(runs):
        colour = colours(index % 10)
        label = run.name if len(runs) > 1 else "total loss"
        loss = loss_history(run)
        if loss:
            left.plot(*zip(*loss, strict=True), color=colour, label=label)
        for name, style in (("AP", "-"), ("AP50", "--")):
            history = metric_history(run, name)
            if history:
                steps, values = zip(*history, strict=True)
                right.plot(
                    steps,
                    values,
                    style,
                    marker="o",
                    color=colour,
                    label=f"{run.name} {name}" if len(runs) > 1 else name,
                )
    left.set(title="Training loss", xlabel="step", ylabel="total loss")
    right.set(title="Validation AP (COCO)", xlabel="step", ylabel="AP", ylim=(0, 1))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(" vs ".join(r.name for r in runs) if len(runs) > 1 else runs[0].name)
    return figure


def _per_class_figure(row: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    names = list(row["per_class"])
    values = [row["per_class"][n] or 0.0 for n in names]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2), 3.5))
    axis.bar(names, values, color="tab:blue")
    axis.axhline(
        row["metrics"]["AP"],
        color="grey",
        linestyle="--",
        label=f"mean AP {row['metrics']['AP']:.3f}",
    )
    axis.set(title=f"AP per class, step {row['step']}", ylabel="AP", ylim=(0, 1))
    axis.tick_params(axis="x", rotation=30)
    axis.legend()
    return figure


def _pr_figure(pr: dict[str, list[float] | None], step: int | None) -> Any:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    recall = [i / 100 for i in range(101)]
    for name, precision in pr.items():
        if precision is not None:
            axis.plot(recall, precision, label=name)
    axis.set(
        title=f"Precision-recall at IoU 0.5, step {step}",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def _predictions_figure(data_dir: Path, detections: list[dict[str, Any]], step: int | None) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from tfod.data.dataset import LABEL_MAP
    from tfod.data.labelmap import read_label_map
    from tfod.data.tfrecord import read_examples

    names = read_label_map(data_dir / LABEL_MAP)
    examples = list(read_examples(sorted(data_dir.glob("val-*.tfrecord"))))[:PREDICTION_IMAGES]
    if not examples:
        return None
    by_image: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= SCORE_TO_DRAW:
            by_image.setdefault(int(det["image_id"]), []).append(det)
    figure, pairs = image_grid(examples)
    colours = plt.get_cmap("tab10")
    for axis, ex in pairs:
        w, h = ex.width, ex.height
        for x0, y0, x1, y1 in ex.boxes:
            axis.add_patch(
                Rectangle(
                    (x0 * w, y0 * h),
                    (x1 - x0) * w,
                    (y1 - y0) * h,
                    fill=False,
                    edgecolor="white",
                    linestyle="--",
                    linewidth=1,
                )
            )
        for det in by_image.get(ex.source_id, []):
            x, y, w, h = det["bbox"]
            colour = colours(int(det["category_id"]) % 10)
            axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.5))
            name = names.get(int(det["category_id"]), str(det["category_id"]))
            axis.text(x, y, f"{name} {det['score']:.2f}", color="white", fontsize=6, va="bottom",
                      bbox={"facecolor": colour, "pad": 1, "linewidth": 0})  # fmt: skip
    figure.suptitle(
        f"Validation predictions (score >= {SCORE_TO_DRAW}), step {step}; ground truth dashed"
    )
    return figure


def _to_tensorboard(directory: Path, images: list[Path], step: int) -> None:
    """The plots as TensorBoard images, so `tensorboard --logdir runs` shows them too."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default(step=step):
        for path in images:
            tf.summary.image(
                path.stem, tf.io.decode_png(path.read_bytes(), channels=3)[None], step=step
            )
    writer.close()
