"""`train.ema`: the weights' moving averages are what is evaluated (inline and `tfod eval`) and
what is exported, while the raw weights stay in the checkpoint for resuming."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import smoke_config
from tfod.config.experiment import auto_decay, make_plan
from tfod.data.dataset import load_summary
from tfod.errors import TfodError
from tfod.evaluate.evaluator import RunEvaluator
from tfod.model.experiment import load_experiment
from tfod.model.weights import read_weights
from tfod.runs.rundir import RunDir
from tfod.train.trainer import train


def test_auto_decay_averages_over_a_tenth_of_the_run(demo_data: Path) -> None:
    assert auto_decay(1000) == 0.99
    assert auto_decay(50) == 0.95  # the floor
    config = smoke_config(demo_data, train={"steps": 2000, "ema": "auto"})
    assert make_plan(config, load_summary(demo_data)).ema_decay == 0.995


@pytest.fixture(scope="module")
def ema_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    keep_all = {"task": {"model": {"detection_generator": {"pre_nms_score_threshold": 0.0}}}}
    config = smoke_config(
        demo_data,
        name="ema",
        train={"steps": 20, "ema": 0.8, "learning_rate": 0.02},
        eval={"every_steps": 20},
        overrides=keep_all,
    )
    result = train(config, tmp_path_factory.mktemp("runs"), progress=False)
    assert result.status == "finished"
    return result.run


def _averages(prefix: Path) -> dict[str, np.ndarray]:
    """Checkpoint key of each raw model weight -> its moving average, read from the file."""
    reader = tf.train.load_checkpoint(str(prefix))
    suffix = "/.OPTIMIZER_SLOT/optimizer/average/.ATTRIBUTES/VARIABLE_VALUE"
    return {
        key.removesuffix(suffix) + "/.ATTRIBUTES/VARIABLE_VALUE": reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.endswith(suffix)
    }


def test_the_checkpoint_keeps_raw_weights_and_their_averages(ema_run: RunDir) -> None:
    _, prefix = ema_run.checkpoint("latest")
    averages = _averages(prefix)
    assert len(averages) > 20
    reader = tf.train.load_checkpoint(str(prefix))
    differ = [k for k, v in averages.items() if not np.allclose(reader.get_tensor(k), v)]
    assert len(differ) > len(averages) // 2


def test_read_weights_loads_the_averages(ema_run: RunDir) -> None:
    _, prefix = ema_run.checkpoint("latest")
    experiment = load_experiment(ema_run)
    evaluator = RunEvaluator(ema_run, experiment)
    read_weights(evaluator.model, prefix, experiment)
    loaded = {v.name: v.numpy() for v in evaluator.model.trainable_variables}
    averages = list(_averages(prefix).values())
    for value in loaded.values():  # each trainable weight is one of the file's averages
        assert any(a.shape == value.shape and np.allclose(a, value) for a in averages)


def _scores(results: list[dict[str, object]]) -> np.ndarray:
    return np.sort(np.array([float(r["score"]) for r in results]))  # type: ignore[arg-type]


def test_inline_and_external_evaluation_score_the_averages(ema_run: RunDir) -> None:
    step, prefix = ema_run.checkpoint("20")
    detections = ema_run.path / "eval" / "detections-20.json"
    inline = json.loads(detections.read_text())
    RunEvaluator(ema_run).evaluate(step, prefix)  # `tfod eval`: rewrites the same file
    external = json.loads(detections.read_text())
    assert len(external) == len(inline)
    np.testing.assert_allclose(_scores(external), _scores(inline), rtol=1e-5, atol=0)
    # The raw weights score differently: neither evaluation used them.
    experiment = load_experiment(ema_run)
    experiment.trainer.optimizer_config.ema = None
    raw = RunEvaluator(ema_run, experiment)
    read_weights(raw.model, prefix, experiment)
    raw_scores = _scores(raw.detector.detect())
    assert raw_scores.shape != _scores(inline).shape or not np.allclose(
        raw_scores, _scores(inline), rtol=1e-3, atol=0
    )


def test_export_serves_the_averages(ema_run: RunDir) -> None:
    from tfod.export.exporter import export

    manifest = export(ema_run, checkpoint="latest", formats=["saved_model"])
    assert manifest["checkpoint"]["step"] == 20
    saved = tf.train.load_checkpoint(
        str(ema_run.path / "export" / "saved_model" / "variables" / "variables")
    )
    tensors = [np.asarray(saved.get_tensor(k)) for k in saved.get_variable_to_shape_map()]
    prefix = ema_run.checkpoint("latest")[1]
    raw = tf.train.load_checkpoint(str(prefix))

    def served(value: np.ndarray) -> bool:
        return any(t.shape == value.shape and np.array_equal(t, value) for t in tensors)

    changed = {k: v for k, v in _averages(prefix).items() if not np.allclose(raw.get_tensor(k), v)}
    assert len(changed) > 20
    for key, average in changed.items():  # the SavedModel names its variables its own way
        assert served(average) and not served(raw.get_tensor(key)), key


def test_a_checkpoint_of_another_layout_is_named_in_a_clear_error(tmp_path: Path) -> None:
    """`tfod export/verify/predict/eval` of a run whose checkpoint lacks weights of the model
    (e.g. a QAT run from before the per-level QAT head): a TfodError naming the checkpoint."""
    import tf_keras

    old = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    prefix = tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt-1"))
    new = tf_keras.Sequential(
        [tf_keras.layers.Dense(2, input_shape=(3,)), tf_keras.layers.Dense(1)]
    )
    experiment = SimpleNamespace(
        trainer=SimpleNamespace(optimizer_config=SimpleNamespace(ema=None))
    )
    with pytest.raises(TfodError, match=r"ckpt-1: the checkpoint does not hold every weight"):
        read_weights(new, Path(prefix), experiment)
