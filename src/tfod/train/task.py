"""Model Garden's RetinaNet tasks with tfod's checkpoint initialisation (see `tfod.train.finetune`)."""

from __future__ import annotations

from typing import Any

from official.vision.tasks import retinanet

from tfod.train import finetune
from tfod.train.qat import is_qat


def make_task(task_config: Any, logging_dir: str | None = None) -> Any:
    """The task for `task_config`: tfod's QAT RetinaNet task for a QAT config, else tfod's."""
    if is_qat(task_config):
        return _qat_task_class()(task_config, logging_dir=logging_dir)
    return TfodRetinaNetTask(task_config, logging_dir=logging_dir)


def _qat_task_class() -> Any:
    """Model Garden's QAT RetinaNet task whose model starts with ALL the float weights.

    Model Garden reads the float checkpoint (`quantization.pretrained_original_checkpoint`) into
    the float model, then builds the fake-quantized one from it. Its backbone and head keep the
    weights; its FPN does not: `clone_model` + `quantize_apply` rebuild the FPN's layers with
    fresh weights (measured: 32 of the FPN's 34 weights re-initialised; the QAT model scored AP 0.0
    before training and a 60-step QAT run of the demo lost a third of its AP). Model Garden's
    recipes retrain for hundreds of epochs and never notice. Here the float FPN's weights are
    copied into the QAT FPN, layer by layer. Its head is tfod's, with activation ranges per
    pyramid level (`tfod.train.qat_head`).
    """
    from official.projects.qat.vision.tasks import retinanet as qat_retinanet

    class TfodQatRetinaNetTask(qat_retinanet.RetinaNetTask):  # type: ignore[misc]
        def build_model(self) -> Any:
            return quantize(retinanet.RetinaNetTask.build_model(self), self.task_config)

    return TfodQatRetinaNetTask


def quantize(model: Any, task_config: Any) -> Any:
    """The fake-quantized twin of the float RetinaNet `model` (Model Garden's QAT factory, tfod's
    per-level head), holding the float weights of `quantization.pretrained_original_checkpoint`
    when it names one.

    The float model is called once first: Model Garden copies the float head's weights into the
    QAT head, and a head that was never called has none. Model Garden's QAT serving module skips
    that call; a float MobileNetV2 model reaches it with its head built, a SpineNet-Mobile one
    does not, so exporting, verifying or predicting a SpineNet-Mobile QAT run stopped with "Not
    enought original model weights" (the export's QAT serving module builds its model here too).
    """
    import tensorflow as tf
    from official.projects.qat.vision.modeling import factory

    from tfod.train import qat_head

    qat_head.install()
    model(tf.zeros([1, *task_config.model.input_size]), training=False)
    quantized = factory.build_qat_retinanet(model, task_config.quantization, task_config.model)
    if task_config.quantization.quantize_detection_decoder:
        copy_float_weights(model.decoder, quantized.decoder)
    return quantized


def copy_float_weights(float_model: Any, quantized: Any) -> None:
    """Copy `float_model`'s weights into the fake-quantized `quantized` built from it.

    Layers that kept their name (batch norms inside Model Garden's BatchNormalizationWrapper) are
    copied by name. tfmot splits each SeparableConv2D into a DepthwiseConv2D and a Conv2D with new
    names, their kernels held by the QuantizeWrapper: those are matched in creation order and by
    shape, each separable conv to the first unused pair whose kernels have its shapes.

    Raises:
        ValueError: a float layer with weights found no place in `quantized`.
    """
    import re

    import tf_keras

    def inner(layer: Any) -> Any:
        while hasattr(layer, "layer"):
            layer = layer.layer
        return layer

    def order(layer: Any) -> int:
        match = re.search(r"_(\d+)$", layer.name)
        return int(match.group(1)) if match else 0

    def variable(wrapper: Any, name: str) -> Any:
        return next(w for w in wrapper.weights if w.name.split("/")[-1] == f"{name}:0")

    by_name = {inner(layer).name: inner(layer) for layer in quantized.layers}
    pieces = {
        kind: sorted((q for q in quantized.layers if type(inner(q)) is kind), key=order)
        for kind in (tf_keras.layers.DepthwiseConv2D, tf_keras.layers.Conv2D)
    }
    for layer in float_model.layers:
        if not layer.weights:
            continue
        if layer.name in by_name:
            by_name[layer.name].set_weights(layer.get_weights())
            continue
        if not isinstance(layer, tf_keras.layers.SeparableConv2D):
            raise ValueError(f"no fake-quantized twin of {layer.name} to copy its weights into")
        depthwise, pointwise, *bias = layer.get_weights()
        targets = []
        for kind, name, value in (
            (tf_keras.layers.DepthwiseConv2D, "depthwise_kernel", depthwise),
            (tf_keras.layers.Conv2D, "kernel", pointwise),
        ):
            candidates = pieces[kind]
            found = next(
                (w for w in candidates if tuple(variable(w, name).shape) == value.shape), None
            )
            if found is None:
                raise ValueError(f"no fake-quantized twin of {layer.name} to copy its weights into")
            candidates.remove(found)
            targets.append((found, name, value))
        for wrapper, name, value in targets:
            variable(wrapper, name).assign(value)
        if bias:
            variable(targets[1][0], "bias").assign(bias[0])


class TfodRetinaNetTask(retinanet.RetinaNetTask):  # type: ignore[misc]
    """`RetinaNetTask` whose `initialize` finds the modules wherever the checkpoint keeps them.

    Model Garden calls `initialize` only when the run folder has no checkpoint of its own, so a
    resumed run continues from its own weights, never from `init_checkpoint` again.
    """

    restored: dict[str, Any] | None = None

    def initialize(self, model: Any) -> None:
        config = self.task_config
        if not config.init_checkpoint:
            return
        plan = finetune.plan_restore(
            config.init_checkpoint, config.init_checkpoint_modules, finetune.classifier_size(config)
        )
        report = finetune.restore(model, plan)
        self.restored = {
            "checkpoint": plan.checkpoint,
            "modules": list(plan.modules),
            "head_reinitialised": plan.skipped_head,
            "report": report,
            **finetune.provenance(config.init_checkpoint),
        }
