"""Reading a checkpoint's weights into a model: the weights' moving averages when the run
trained them (`train.ema`).

Model Garden trains them (`optimizer_config.ema`: its EMA optimizer keeps the averages as the
optimizer's `average` slots, saved in every checkpoint beside the raw weights, which resuming
needs). Everything in tfod that reads a checkpoint's weights (inline and `tfod eval`, `tfod
export`, `tfod predict`) reads them through `read_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfod.errors import TfodError


def uses_ema(experiment: Any) -> bool:
    return experiment.trainer.optimizer_config.ema is not None


def read_weights(model: Any, prefix: Path, experiment: Any) -> None:
    """Load checkpoint `prefix` into `model`: the weights' moving averages when `experiment`
    trained them, else the weights (every model variable must be in the checkpoint).

    Raises:
        TfodError: the checkpoint lacks some of the model's variables (made by another layout,
            e.g. a QAT run trained before tfod's per-level QAT head).
    """
    import tensorflow as tf

    status = tf.train.Checkpoint(model=model).read(str(prefix))
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as err:
        raise TfodError(
            f"{prefix}: the checkpoint does not hold every weight of the model this run builds "
            f"({str(err).split(': [')[0].split('. ')[0]}): it was written for another layout. A "
            "QAT run trained before tfod's per-level QAT head needs `tfod qat PARENT` again"
        ) from None
    if not uses_ema(experiment):
        return
    import tf_keras
    from official.modeling import optimization

    settings = experiment.trainer.optimizer_config.ema
    averages = optimization.ExponentialMovingAverage(
        tf_keras.optimizers.legacy.SGD(), trainable_weights_only=settings.trainable_weights_only
    )
    averages.shadow_copy(model)  # the `average` slots, filled from the checkpoint below
    tf.train.Checkpoint(model=model, optimizer=averages).read(str(prefix)).expect_partial()
    averages.assign_average_vars(model.variables)
