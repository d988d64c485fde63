"""Evaluating a run's checkpoints: once (`tfod eval RUN`), continuously (`--watch`) or inline.

Each evaluation appends one line to metrics.jsonl, writes the detections as a COCO results JSON
under eval/, writes the metrics to TensorBoard under validation/ and keeps best/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfod import atomic
from tfod.console import console
from tfod.errors import TfodError
from tfod.evaluate.coco import Detector, coco_metrics, in_canonical_order
from tfod.model.experiment import load_experiment
from tfod.model.weights import read_weights
from tfod.runs.rundir import FINISHED, RunDir, damage, now

Row = dict[str, Any]


class RunEvaluator:
    """Evaluates checkpoints of one run with one model built once.

    Args:
        run: the run folder.
        experiment, task, model: the trainer's own, for inline evaluation; built from the run's
            experiment.yaml when omitted.
    """

    def __init__(
        self, run: RunDir, experiment: Any = None, task: Any = None, model: Any = None
    ) -> None:
        from official.core import task_factory

        self.run = run.require()
        self.experiment = experiment or load_experiment(run)
        self.task = task or task_factory.get_task(self.experiment.task, logging_dir=str(run.path))
        self.model = model or self.task.build_model()
        self.detector = Detector(self.task, self.experiment, self.model)
        self.metric = str(run.read().get("eval_metric", "AP"))
        self.ground_truth = Path(self.experiment.task.annotation_file)
        self._writer: Any = None

    def evaluate(self, step: int, prefix: Path, restore: bool = True) -> Row:
        """Evaluate the checkpoint `prefix` (at `step`); `restore=False` uses the live model."""

        if restore:
            problem = damage(prefix)
            if problem is not None:
                raise TfodError(f"checkpoint is damaged ({problem})", f"{prefix}.index")
            read_weights(self.model, prefix, self.experiment)
        started = time.perf_counter()
        results = in_canonical_order(self.detector.detect())
        scores = coco_metrics(self.ground_truth, results)
        atomic.write_json(self.run.path / "eval" / f"detections-{step}.json", results)
        atomic.write_json(self.run.path / "eval" / f"pr-{step}.json", scores.pop("pr"))
        row: Row = {
            "step": step,
            "checkpoint": prefix.name,
            "time": now(),
            "seconds": round(time.perf_counter() - started, 2),
            "detections": len(results),
            **scores,
        }
        if step not in {r.get("step") for r in self.run.metrics()}:
            self.run.append_metrics(row)
        self._summaries(step, scores)
        value = scores["metrics"].get(self.metric)
        if value is not None and Path(f"{prefix}.index").is_file():
            row["is_best"] = self.run.keep_best(step, prefix, self.metric, float(value or 0.0))
        return row

    def time_detection(self, first_seconds: float, images: int) -> float:
        """Seconds one more evaluation of `images` validation images takes: detection timed on a
        sample (COCO scoring is small beside it), at most the first evaluation's `first_seconds`
        (which also traced the model, so it is no measure of the next ones)."""
        return min(first_seconds, images * self.detector.seconds_per_image())

    def watch(
        self, timeout: float, poll: float = 10.0, on_row: Callable[[Row], None] | None = None
    ) -> int:
        """Evaluate every new checkpoint once until the run is finished or `timeout` s pass idle.

        Returns:
            How many checkpoints were evaluated.
        """
        done = {int(r["step"]) for r in self.run.metrics() if "step" in r}
        evaluated, idle_since = 0, time.monotonic()
        while True:
            pending = {s: p for s, p in self.run.checkpoints().items() if s not in done}
            for step, prefix in pending.items():
                if not Path(f"{prefix}.index").is_file():  # deleted by max_to_keep meanwhile
                    continue
                done.add(step)
                try:
                    row = self.evaluate(step, prefix)
                except TfodError as err:  # a damaged checkpoint: skip it, say so, go on
                    console.print(f"[yellow]skipped[/yellow] {err}")
                    continue
                evaluated += 1
                idle_since = time.monotonic()
                if on_row is not None:
                    on_row(row)
            if pending:
                continue
            if self.run.read().get("status") == FINISHED:
                return evaluated
            if time.monotonic() - idle_since > timeout:
                return evaluated
            time.sleep(poll)

    def _summaries(self, step: int, scores: dict[str, Any]) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.run.path / "validation"))
        with self._writer.as_default(step=step):
            for name, value in scores["metrics"].items():
                tf.summary.scalar(name, value)
            for name, value in scores["per_class"].items():
                if value is not None:
                    tf.summary.scalar(f"AP_per_class/{name}", value)
        self._writer.flush()
