"""COCO evaluation agrees with pycocotools; --watch evaluates each new checkpoint exactly once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import smoke_config
from tfod.config.schema import dump_config
from tfod.evaluate.coco import METRIC_NAMES, coco_metrics
from tfod.runs.rundir import RunDir


def _pycocotools(ground_truth: Path, results: list[dict]) -> np.ndarray:
    """COCO stats computed straight with pycocotools, as any COCO user would."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ground_truth))
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_metrics_match_pycocotools_on_the_same_detections(demo_data: Path) -> None:
    ground_truth = demo_data / "val_coco.json"
    gt = json.loads(ground_truth.read_text())
    rng = np.random.default_rng(0)
    results = []
    for ann in gt["annotations"]:  # jittered true boxes, some with the wrong class, plus noise
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, 0.1 * w), rng.normal(0, 0.1 * h)
        wrong = rng.random() < 0.2
        category = ann["category_id"] % 3 + 1 if wrong else ann["category_id"]
        results.append({"image_id": ann["image_id"], "category_id": category,
                        "bbox": [x + dx, y + dy, w, h], "score": float(rng.random())})  # fmt: skip
    results.append(
        {"image_id": gt["images"][0]["id"], "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}
    )
    ours = coco_metrics(ground_truth, results)
    stats = _pycocotools(ground_truth, results)
    assert [ours["metrics"][name] for name in METRIC_NAMES] == pytest.approx(list(stats), abs=1e-12)
    assert 0.2 < ours["metrics"]["AP50"] < 1.0
    assert set(ours["per_class"]) == {"circle", "square", "triangle"}
    present = [v for v in ours["per_class"].values() if v is not None]
    assert np.mean(present) == pytest.approx(ours["metrics"]["AP"], abs=1e-9)


def test_equal_scores_score_alike_in_any_order(demo_data: Path) -> None:
    """A quantized model's scores are whole 256ths and tie often; runtimes return tied
    detections in their own order, and pycocotools ranks ties in the order it is given them."""
    ground_truth = demo_data / "val_coco.json"
    gt = json.loads(ground_truth.read_text())
    rng = np.random.default_rng(1)
    results = []
    for ann in gt["annotations"]:  # a good and a poor box for each object, their scores tied
        x, y, w, h = ann["bbox"]
        score = float(rng.integers(10, 13)) / 256
        for shift in (0.05, 0.4):
            box = [x + shift * w, y, w, h]
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                            "bbox": box, "score": score})  # fmt: skip
    reordered = results[::-1]
    plain = [_pycocotools(ground_truth, [dict(r) for r in rs]) for rs in (results, reordered)]
    assert not np.allclose(*plain)  # (loadRes adds keys to what it is given: copies)
    assert coco_metrics(ground_truth, results) == coco_metrics(ground_truth, reordered)


def test_no_detections_scores_zero(demo_data: Path) -> None:
    scores = coco_metrics(demo_data / "val_coco.json", [])
    assert scores["metrics"]["AP"] == 0.0 and scores["metrics"]["AP50"] == 0.0


@pytest.mark.slow
def test_eval_of_a_run_matches_pycocotools_on_its_saved_detections(smoke_run: Path) -> None:
    from tfod.evaluate.evaluator import RunEvaluator

    run = RunDir(smoke_run)
    step, prefix = run.checkpoint("latest")
    row = RunEvaluator(run).evaluate(step, prefix)
    results = json.loads((smoke_run / "eval" / f"detections-{step}.json").read_text())
    assert len(results) == row["detections"] > 0
    stats = _pycocotools(
        Path(json.loads((smoke_run / "run.json").read_text())["dataset"]["dir"]) / "val_coco.json",
        results,
    )
    assert [row["metrics"][n] for n in METRIC_NAMES] == pytest.approx(list(stats), abs=1e-12)
    assert [r["step"] for r in run.metrics()] == [2, 4], "re-evaluating does not duplicate a line"


@pytest.mark.slow
def test_evaluation_keeps_the_detections_of_model_gardens_default_nms(exported_run: Path) -> None:
    """tfod evaluates with TensorFlow's own NMS kernel (`batched`); on a detector that has learnt
    something it keeps exactly the boxes that Model Garden's TPU-padded default, v2, keeps."""
    from tfod.evaluate.evaluator import RunEvaluator
    from tfod.model.experiment import load_experiment
    from tfod.model.weights import read_weights

    run = RunDir(exported_run)  # read only: other tests read it too
    _, prefix = run.checkpoint("latest")
    detections = {}
    for version in ("batched", "v2"):
        experiment = load_experiment(run)
        assert experiment.task.model.detection_generator.nms_version == "batched"
        experiment.task.model.detection_generator.nms_version = version
        evaluator = RunEvaluator(run, experiment=experiment)
        read_weights(evaluator.model, prefix, experiment)
        found = evaluator.detector.detect()
        detections[version] = sorted(
            found, key=lambda d: (d["image_id"], d["category_id"], -d["score"])
        )
    tfod, model_garden = detections["batched"], detections["v2"]
    assert len(tfod) == len(model_garden) > 10
    for ours, theirs in zip(tfod, model_garden, strict=True):
        for key in ("image_id", "category_id"):
            assert ours[key] == theirs[key]
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
        assert ours["bbox"] == pytest.approx(theirs["bbox"], abs=1e-3)


@pytest.mark.slow
def test_watch_waits_for_the_trainer_then_evaluates_each_checkpoint_once(
    demo_data: Path, tmp_path: Path
) -> None:
    """As in compose: the evaluator starts first and waits; a trainer with --no-eval still saves
    a checkpoint at every evaluation point; the evaluator takes each once and stops when the run
    is finished."""
    config = smoke_config(demo_data, name="watched", train={"steps": 30}, eval={"every_steps": 10})
    path = tmp_path / "tfod.yaml"
    path.write_text(dump_config(config))
    env = {**os.environ, "COLUMNS": "200"}
    evaluator = subprocess.Popen(
        [sys.executable, "-m", "tfod", "eval", "runs/watched", "--watch", "--timeout", "900", "--poll", "0.5"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    time.sleep(2)
    trainer = subprocess.run(
        [sys.executable, "-m", "tfod", "train", str(path), "--no-eval"], cwd=tmp_path,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trainer.returncode == 0, trainer.stderr
    output, _ = evaluator.communicate(timeout=900)  # generous: CI builds images beside the suite
    assert evaluator.returncode == 0, output
    assert "Waiting for a trainer to start" in output
    assert "Evaluated 3 checkpoint(s); run status: finished" in output
    run = RunDir(tmp_path / "runs" / "watched")
    assert sorted(run.checkpoints()) == [10, 20, 30]
    assert [r["step"] for r in run.metrics()] == [10, 20, 30]
    assert run.read()["best"]["step"] in (10, 20, 30)


def test_watch_gives_up_when_no_run_appears(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tfod", "eval", str(tmp_path / "nothing"), "--watch", "--timeout", "1", "--poll", "0.2"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert result.returncode == 1 and "no run appeared within 1 s" in result.stderr


def test_watch_of_a_finished_run_with_nothing_new_says_so(smoke_run: Path, tmp_path: Path) -> None:
    """An evaluator beside a trainer that failed at once watches the earlier run of that name:
    it must not read like a success."""
    import shutil

    earlier = shutil.copytree(smoke_run, tmp_path / "demo")
    result = subprocess.run(
        [sys.executable, "-m", "tfod", "eval", str(earlier), "--watch", "--timeout", "5", "--poll", "0.5"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "No new checkpoint to evaluate: run 'demo' is finished at step 4" in result.stderr
    assert "Evaluated 0" not in result.stderr


def test_model_garden_ground_truth_fallback_is_still_broken_under_numpy2() -> None:
    """Why tfod always passes val_coco.json: Model Garden's own ground-truth builder calls int()
    on per-image entries, which NumPy 2 refuses for shape-[1] arrays.

    If this starts failing, Model Garden fixed it and the workaround can be reconsidered.
    """
    from official.vision.evaluation import coco_utils

    groundtruths = {
        "source_id": [np.array([1])],
        "height": [np.array([[100]])],
        "width": [np.array([100])],
        "num_detections": [np.array([1])],
        "boxes": [np.array([[[10.0, 10.0, 50.0, 50.0]]])],
        "classes": [np.array([[1]])],
        "is_crowds": [np.array([[0]])],
        "areas": [np.array([[1600.0]])],
    }
    with pytest.raises(TypeError, match="only 0-dimensional arrays"):
        coco_utils.convert_groundtruths_to_coco_dataset(groundtruths)
