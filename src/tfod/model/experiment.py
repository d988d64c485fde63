"""A run's Model Garden experiment, read back from the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfod.errors import TfodError
from tfod.runs.rundir import EXPERIMENT_YAML, RunDir


def load_experiment(run: RunDir) -> Any:
    """The run's resolved Model Garden config, read back from experiment.yaml."""
    from official.core import exp_factory
    from official.modeling.hyperparams import params_dict

    from tfod.config.experiment import experiment_name
    from tfod.config.presets import get_preset

    path = run.path / EXPERIMENT_YAML
    state = run.read()
    if not path.is_file() or "plan" not in state:
        raise TfodError(
            "run has no experiment.yaml yet: the trainer writes it when it starts", run.path
        )
    name = experiment_name(get_preset(state["plan"]["preset"]), qat=bool(state.get("qat")))
    experiment = exp_factory.get_exp_config(name)
    params_dict.override_params_dict(experiment, str(path), is_strict=False)
    if state.get("qat"):
        # The float weights QAT started from matter only to the trainer's first step; whoever
        # reads a QAT run restores its own checkpoint, whole, wherever the run folder now is.
        experiment.task.quantization.pretrained_original_checkpoint = None
        from tfod.model import qat_head

        qat_head.install()  # the head the run trained: its ranges are per pyramid level
    return experiment


def dataset_dir(experiment: Any) -> Path:
    """The tfod dataset folder a run's experiment reads (shards, label map, val_coco.json)."""
    return Path(experiment.task.train_data.input_path).parent
