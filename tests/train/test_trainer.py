"""Training on Model Garden's trainer: run folder, clean stop on SIGTERM, resume, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import smoke_config
from tfod.config.schema import TfodConfig
from tfod.errors import TfodError
from tfod.runs.rundir import RunDir

pytestmark = pytest.mark.slow


def test_smoke_run_writes_the_run_folder(smoke_run: Path) -> None:
    run = RunDir(smoke_run)
    state = run.read()
    assert state["status"] == "finished" and state["step"] == 4
    assert state["plan"]["preset"] == "retinanet-mobilenetv2-256-smoke"
    assert state["dataset"]["fingerprint"].startswith("sha256:")
    assert state["versions"]["tensorflow"].startswith("2.20")
    assert state["seed"] == 0
    assert sorted(run.checkpoints()) == [2, 4]
    assert (smoke_run / "experiment.yaml").is_file() and (smoke_run / "tfod.yaml").is_file()
    assert list((smoke_run / "train").glob("events.out.tfevents.*")), "TensorBoard train events"
    assert list((smoke_run / "validation").glob("events.out.tfevents.*")), "TensorBoard eval events"
    assert [row["step"] for row in run.metrics()] == [2, 4]
    assert state["best"]["step"] in (2, 4) and (smoke_run / "best" / "checkpoint").is_file()
    assert "Traceback" not in (smoke_run / "train.log").read_text()


def test_training_a_finished_run_again_reports_its_last_evaluation(smoke_run: Path) -> None:
    from tfod.train.trainer import train

    settings = yaml.safe_load((smoke_run / "tfod.yaml").read_text())
    again = train(TfodConfig.model_validate(settings), smoke_run.parent, progress=False)
    assert again.status == "finished" and again.step == 4
    assert again.last_eval is not None and again.last_eval["step"] == 4


def test_resuming_with_other_settings_is_refused(smoke_run: Path) -> None:
    from tfod.train.trainer import train

    settings = yaml.safe_load((smoke_run / "tfod.yaml").read_text())
    settings["train"]["learning_rate"] = 0.001
    changed = TfodConfig.model_validate(settings)
    with pytest.raises(TfodError, match=r"exists with other settings \(train.learning_rate"):
        train(changed, smoke_run.parent, progress=False)


def test_the_advice_on_other_settings_is_what_compose_sets(
    smoke_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfod.train.trainer import train

    settings = yaml.safe_load((smoke_run / "tfod.yaml").read_text())
    settings["train"]["learning_rate"] = 0.001
    with pytest.raises(TfodError, match="For a new run, pass --run NEW_NAME;"):
        train(TfodConfig.model_validate(settings), smoke_run.parent, progress=False)
    monkeypatch.setenv("TFOD_NEW_RUN_HINT", "set TFOD_RUN=NEW_NAME")
    with pytest.raises(TfodError, match="For a new run, set TFOD_RUN=NEW_NAME;"):
        train(TfodConfig.model_validate(settings), smoke_run.parent, progress=False)


def test_another_evaluation_interval_is_not_other_settings(smoke_run: Path) -> None:
    """The demo's interval follows its steps: TFOD_DEMO_STEPS=N on a compose run resumes it."""
    from tfod.config.experiment import make_plan
    from tfod.data.dataset import load_summary
    from tfod.train.trainer import _refuse_other_settings

    settings = yaml.safe_load((smoke_run / "tfod.yaml").read_text())
    settings["eval"]["every_steps"] = 7
    config = TfodConfig.model_validate(settings)
    _refuse_other_settings(
        RunDir(smoke_run), config, make_plan(config, load_summary(config.data.dir))
    )


def test_finetune_from_a_run_with_other_classes(smoke_run: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    from tests.data.sources import write_coco
    from tfod.config.experiment import build_experiment, make_plan
    from tfod.data.convert import ConvertOptions, convert
    from tfod.data.dataset import load_summary
    from tfod.train.task import TfodRetinaNetTask

    two_classes = tmp_path / "data"
    convert(
        write_coco(tmp_path / "src"),
        two_classes,
        ConvertOptions(workers=1, progress=False, val_fraction=0.34),
    )
    config = smoke_config(
        two_classes, name="b", model={"init_checkpoint": str(smoke_run), "init_modules": "all"}
    )
    plan = make_plan(config, load_summary(two_classes))
    experiment = build_experiment(config, plan)
    task = TfodRetinaNetTask(experiment.task)
    model = task.build_model()
    task.initialize(model)
    assert task.restored is not None
    assert (
        task.restored["modules"] == ["backbone", "decoder"] and task.restored["head_reinitialised"]
    )
    report = task.restored["report"]
    assert report["backbone"]["action"] == report["decoder"]["action"] == "restored"
    assert report["head"]["action"] == "re-initialised"
    assert "another number of classes" in report["head"]["why"]
    assert report["head"]["variables"] == len(model.head.variables) > 0

    prefix = task.restored["checkpoint"]
    names = dict(tf.train.list_variables(prefix))
    saved = [
        tf.train.load_variable(prefix, name)
        for name in names
        if name.startswith("backbone/")
        and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
        and ".OPTIMIZER_SLOT" not in name
    ]
    assert saved, "run A saved its backbone"
    # Every backbone variable of B equals one of A's saved values, read independently of tfod.
    assert sorted(np.asarray(v).tobytes() for v in saved) == sorted(
        v.numpy().tobytes() for v in model.backbone.variables
    )
    # A's head predicted 3 classes + background, B's predicts 2 + background (9 anchors each).
    a_bias = next(
        n for n in names
        if n.startswith("head/") and "classifier" in n and n.endswith("bias/.ATTRIBUTES/VARIABLE_VALUE")
    )  # fmt: skip
    assert names[a_bias][-1] == 4 * 9
    assert any(v.shape[-1] == 3 * 9 for v in model.head.variables)


def test_modules_saved_under_model_are_restored_where_model_garden_gives_up(
    demo_data: Path, tmp_path: Path
) -> None:
    import tensorflow as tf
    from official.vision.tasks import retinanet

    from tfod.config.experiment import build_experiment, make_plan
    from tfod.data.dataset import load_summary
    from tfod.train.task import TfodRetinaNetTask

    def experiment_from(checkpoint: str | None) -> object:
        model = {"init_checkpoint": checkpoint, "init_modules": "backbone"} if checkpoint else {}
        config = smoke_config(demo_data, model=model)
        return build_experiment(config, make_plan(config, load_summary(demo_data)))

    source = TfodRetinaNetTask(experiment_from(None).task).build_model()  # type: ignore[attr-defined]
    prefix = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=source.backbone)).write(
        str(tmp_path / "keras-style")
    )
    saved = sorted(v.numpy().tobytes() for v in source.backbone.variables)

    experiment = experiment_from(prefix)
    garden = retinanet.RetinaNetTask(experiment.task)  # type: ignore[attr-defined]
    garden_model = garden.build_model()
    with pytest.raises(AssertionError, match="Python objects that were not bound"):
        garden.initialize(garden_model)  # Model Garden's own: an opaque error

    ours = TfodRetinaNetTask(experiment.task)  # type: ignore[attr-defined]
    model = ours.build_model()
    ours.initialize(model)
    assert sorted(v.numpy().tobytes() for v in model.backbone.variables) == saved


def test_checkpoint_with_nothing_matching_fails_clearly(demo_data: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    from tfod.train import finetune

    prefix = tf.train.Checkpoint(encoder=tf.Variable([1.0, 2.0])).write(str(tmp_path / "ckpt"))
    with pytest.raises(TfodError) as info:
        finetune.plan_restore(prefix, ["backbone", "decoder"], None)
    message = str(info.value)
    assert "none of the requested modules (backbone, decoder)" in message
    assert "'backbone/' or 'model/backbone/'" in message and "encoder" in message


def test_run_json_is_valid_json_after_every_step(smoke_run: Path) -> None:
    json.loads((smoke_run / "run.json").read_text())
    assert (
        yaml.safe_load((smoke_run / "experiment.yaml").read_text())["task"]["model"]["num_classes"]
        == 4
    )
